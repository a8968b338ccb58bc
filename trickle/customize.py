"""Make it yours without forking: template and static overrides, and the words of the page.

Templates in TEMPLATES_DIR win over the built-in ones of the same name, and an
override can extend the original as `default:NAME` to change a single block.
Static files in STATIC_DIR win likewise. The streaming code renders the same
templates, so an overridden `_message.html` applies live too.
"""

from __future__ import annotations

import os

from flask import Flask, send_from_directory
from jinja2 import ChoiceLoader, FileSystemLoader, PrefixLoader

from .settings import Settings


def init_app(app: Flask, settings: Settings, builtin_templates: str, builtin_static: str) -> None:
    builtin = FileSystemLoader(builtin_templates)
    loaders = [FileSystemLoader(settings.templates_dir)] if settings.templates_dir else []
    app.jinja_loader = ChoiceLoader([*loaders, builtin, PrefixLoader({"default": builtin}, delimiter=":")])

    static_dirs = [d for d in (settings.static_dir, builtin_static) if d]
    has_theme = bool(settings.static_dir and os.path.isfile(os.path.join(settings.static_dir, "theme.css")))

    def static(filename: str):
        """Serve a static file, the operator's copy first."""
        for folder in static_dirs:
            if os.path.isfile(os.path.join(folder, filename)):
                return send_from_directory(folder, filename, max_age=app.get_send_file_max_age(filename))
        return send_from_directory(builtin_static, filename)  # a clean 404

    app.add_url_rule("/static/<path:filename>", endpoint="static", view_func=static)

    site = {
        "name": settings.app_name,
        "logo": settings.app_logo,
        "welcome": settings.welcome_message,
        "prompts": settings.suggested_prompts,
        "theme_css": has_theme,
    }

    @app.context_processor
    def inject_site():
        return {"site": site}
