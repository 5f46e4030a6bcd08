"""The operation by which sisy's Django migrations apply the SQL migration files."""

from __future__ import annotations

from django.db import migrations

from . import sql_files


class RunSisySQL(migrations.RunSQL):
    """Apply ``sql/migrations/<name>.sql``; unapply with ``<name>.reverse.sql``."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(
            sql=sql_files.migration(name), reverse_sql=sql_files.reverse_migration(name)
        )

    def deconstruct(self) -> tuple[str, list[object], dict[str, object]]:
        return self.__class__.__qualname__, [], {"name": self.name}

    def describe(self) -> str:
        return f"Apply sql/migrations/{self.name}.sql"
