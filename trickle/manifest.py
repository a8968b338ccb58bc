"""The web app manifest: "Add to Home Screen" gives an app with the site's name and logo.

Built from the same customization settings the pages show (APP_NAME, APP_LOGO), through the
template context that `customize.py` fills, so the installed app and the page never disagree.
"""

from __future__ import annotations

import mimetypes

from flask import Blueprint, current_app, jsonify, url_for

bp = Blueprint("manifest", __name__)

LIGHT_BACKGROUND = "#ffffff"  # --bg of the built-in light theme; the page's theme-color meta has both
BUILTIN_ICONS = [
    ("favicon.svg", "any", "image/svg+xml"),
    ("icon-192.png", "192x192", "image/png"),
    ("icon-512.png", "512x512", "image/png"),
]


def _icons(logo: str | None) -> list[dict]:
    """The operator's logo when there is one, else the built-in icon as SVG and PNG."""
    if logo:
        kind = mimetypes.guess_type(logo.split("?", 1)[0])[0]
        return [{"src": logo, "sizes": "any", **({"type": kind} if kind else {})}]
    return [
        {"src": url_for("static", filename=name), "sizes": sizes, "type": kind} for name, sizes, kind in BUILTIN_ICONS
    ]


@bp.get("/manifest.webmanifest")
def manifest():
    """The manifest, in the site's words."""
    context: dict = {}
    current_app.update_template_context(context)
    site = context["site"]
    name = site["name"]
    response = jsonify(
        {
            "name": name,
            "short_name": name if len(name) <= 12 else name.split()[0][:12],
            "description": f"{name}: a chat that streams its answers.",
            "start_url": url_for("pages.index"),
            "scope": "/",
            "display": "standalone",
            "background_color": LIGHT_BACKGROUND,
            "theme_color": LIGHT_BACKGROUND,
            "icons": _icons(site["logo"]),
        }
    )
    response.mimetype = "application/manifest+json"
    return response
