"""Trickle: a small server-rendered chat for any OpenAI-compatible model."""

from __future__ import annotations

import dataclasses
import os
import secrets
import time
from dataclasses import dataclass, field

import click
from dotenv import load_dotenv
from flask import Flask

from . import (
    attachments_store,  # noqa: F401  (its table joins storage.metadata, which the migrations match)
    customize,
    database,
    logs,
    sharing_store,  # noqa: F401  (its table joins storage.metadata, which the migrations match)
)
from .provider_choice import choose_provider
from .providers import Provider
from .registry import Registry
from .settings import Settings, load_settings
from .titles import Titles

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass
class Trickle:
    """What the views need, wired once per app: settings, database, model, live generations."""

    settings: Settings
    engine: object
    provider: Provider
    registry: Registry
    titles: Titles
    _models: tuple[float, list[str]] = field(default=(0.0, []))

    def models(self) -> list[str]:
        """The models people can pick: CHAT_MODELS, else the provider's list (cached 5 min)."""
        if self.settings.chat_models:
            found = list(self.settings.chat_models)
        else:
            fetched_at, found = self._models
            if time.monotonic() - fetched_at > 300:
                found = self.provider.list_models()
                self._models = (time.monotonic(), found)
        return found if self.settings.chat_model in found else [self.settings.chat_model, *found]


def _development_secret(instance_path: str) -> str:
    """Without SECRET_KEY (allowed outside production): one random key kept in the instance folder,
    so that every worker and every restart signs cookies alike."""
    os.makedirs(instance_path, exist_ok=True)
    path = os.path.join(instance_path, "secret_key")
    if not os.path.exists(path):
        draft = f"{path}.{os.getpid()}"
        with open(draft, "w") as new:
            new.write(secrets.token_hex(32))
        try:
            os.link(draft, path)  # atomic and exclusive: the first worker's key wins
        except FileExistsError:
            pass
        finally:
            os.unlink(draft)
    with open(path) as kept:
        return kept.read().strip()


def create_app(env: dict | None = None) -> Flask:
    """Build the app from the environment (and `.env`); raises SettingsError naming a bad variable."""
    if env is None:
        load_dotenv(os.path.join(os.getcwd(), ".env"))
    settings = load_settings(env)
    app = Flask(__name__, instance_relative_config=True, static_folder=None)
    customize.init_app(app, settings, os.path.join(ROOT, "templates"), os.path.join(ROOT, "static"))
    app.config.update(
        SECRET_KEY=settings.secret_key or _development_secret(app.instance_path),
        MAX_CONTENT_LENGTH=settings.max_content_length,
        SEND_FILE_MAX_AGE_DEFAULT=3600,
    )
    logs.configure(settings.log_level)

    database_url = settings.database_url
    if database_url is None:
        os.makedirs(app.instance_path, exist_ok=True)
        database_url = "sqlite:///" + os.path.join(app.instance_path, "trickle.db")
    engine = database.make_engine(database_url, env)
    database.migrate(engine)  # idempotent and locked: a no-op once `init-db` (the release phase) ran them

    provider = choose_provider(settings)
    app.jinja_env.globals["provider"] = provider  # the header's banner: what answers, and what is wrong with it
    if settings.chat_model is None:  # a probed Ollama or the local model brings its own default
        settings = dataclasses.replace(settings, chat_model=provider.default_model)
    bus = None
    if settings.redis_url:  # several instances: live answers and Stop travel through Redis
        from . import live

        prefix = live.namespace(engine.url, settings.redis_key_prefix)
        bus = live.Bus(settings.redis_url, prefix)
    registry = Registry(engine, settings, bus)
    registry.watch_orphans()  # answers left "streaming" by a killed worker become "interrupted"
    app.extensions["trickle"] = Trickle(settings, engine, provider, registry, Titles(engine, provider, settings))

    from . import (
        api,
        attachment_views,
        controls,
        errors,
        history,
        limits,
        manifest,
        metrics,
        pages,
        security,
        sharing,
        validation,
        ws,
    )

    validation.init_app(app)

    limits.init_app(app, settings)
    security.init_app(app, settings, limits.limiter)
    app.register_blueprint(pages.bp)
    app.register_blueprint(attachment_views.bp)
    app.register_blueprint(metrics.bp)
    app.register_blueprint(controls.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(ws.bp)
    app.register_blueprint(manifest.bp)
    app.register_blueprint(sharing.bp)
    app.register_blueprint(history.bp)
    errors.init_app(app)

    @app.cli.command("init-db")
    def init_db_command():
        """Apply the database migrations (idempotent; the app also does it at start)."""
        database.migrate(engine)
        click.echo(
            f"Database ready: {engine.url.render_as_string(hide_password=True)} "
            f"(schema {database.current_revision(engine)})"
        )

    return app
