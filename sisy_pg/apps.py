from __future__ import annotations

from functools import cache

from django.apps import AppConfig


class SisyConfig(AppConfig):
    """The Django app of sisy-pg; its label is Sisy's, ``sisy``, so Sisy's migrations keep working."""

    name = "sisy_pg"
    label = "sisy"
    verbose_name = "Sisy recurring tasks"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from procrastinate.contrib.django import procrastinate_app

        from . import checks, worker  # noqa: F401  (registers the checks)

        app = procrastinate_app.current_app
        if isinstance(app, procrastinate_app.FutureApp):
            # procrastinate.contrib.django is missing or listed after us;
            # checks.py reports it (sisy.E001).
            return
        worker.install(app, get_store())


@cache
def get_store():
    """The process-wide Store, on procrastinate's database alias."""
    from procrastinate.contrib.django.settings import settings as procrastinate_settings

    from .store import Store

    return Store(procrastinate_settings.DATABASE_ALIAS)
