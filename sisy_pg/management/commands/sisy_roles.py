"""``manage.py sisy_roles``: print the role recipe (sql/roles.sql) for psql.

The file is inside the installed package; this prints it wherever that is::

    python -m django sisy_roles | psql "$DATABASE_URL" -v ON_ERROR_STOP=1 -v worker=shop_worker

psql runs it (its variables and ``\\gexec`` are psql's), as a role that may
create roles and grant on sisy's tables (docs/security.md#roles).
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from ... import sql_files


class Command(BaseCommand):
    help = (
        "Print sql/roles.sql, the psql script that creates and grants the worker, "
        "operator and monitor roles (docs/security.md)."
    )
    requires_system_checks: list[str] = []

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write(sql_files.roles(), ending="")
