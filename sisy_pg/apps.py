from __future__ import annotations

from django.apps import AppConfig


class SisyConfig(AppConfig):
    """The Django app of sisy-pg; its label is Sisy's, ``sisy``, so Sisy's migrations keep working."""

    name = "sisy_pg"
    label = "sisy"
    verbose_name = "Sisy recurring tasks"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import (  # noqa: F401  (checks registers them)
            audit,
            checks,
            procrastinate_seam,
            task_results,
            tasks_framework,
            worker,
        )

        # Runs that enqueued a Django task follow its result (task_started, task_finished).
        task_results.connect()
        # Django's sessions name themselves to the audit of tasks (api, migration).
        audit.connect()
        app = procrastinate_seam.django_app()
        if app is None:
            # procrastinate.contrib.django is missing or listed after us;
            # checks.py reports it (sisy.E001).
            return
        worker.install(app)
        if tasks_framework.available():
            # The procrastinate task that runs the jobs of ProcrastinateBackend.
            from . import django_tasks

            django_tasks.install(app)
