"""procrastinate's schema has every table, column and function sisy's SQL uses (the SQL side of the seam)."""

from __future__ import annotations

import procrastinate
import pytest
from django.db import connection

from sisy_pg import procrastinate_seam


def _sql_requirement_met(kind: str, name: str, detail: str) -> bool:
    queries = {
        "type attribute": """
            SELECT a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
              FROM pg_attribute AS a JOIN pg_type AS t ON t.typrelid = a.attrelid
             WHERE t.typname = %s AND a.attnum > 0 AND NOT a.attisdropped""",
        "function": """
            SELECT pg_get_function_arguments(p.oid) FROM pg_proc AS p WHERE p.proname = %s""",
        "column": """
            SELECT a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
              FROM pg_attribute AS a JOIN pg_class AS c ON c.oid = a.attrelid
             WHERE c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped""",
        "enum label": """
            SELECT e.enumlabel FROM pg_enum AS e JOIN pg_type AS t ON t.oid = e.enumtypid
             WHERE t.typname = %s""",
    }
    with connection.cursor() as cursor:
        cursor.execute(queries[kind], [name])
        return detail in {row[0] for row in cursor.fetchall()}


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("kind", "name", "detail"),
    procrastinate_seam.SQL_REQUIREMENTS,
    ids=[f"{name}:{detail}" for _, name, detail in procrastinate_seam.SQL_REQUIREMENTS],
)
def test_procrastinate_schema_has_what_the_sql_seam_uses(kind, name, detail):
    assert _sql_requirement_met(kind, name, detail), (
        f"procrastinate {procrastinate.__version__}'s schema has no {kind} {name}: {detail}; "
        "adapt the seam section of sql/schema.sql (in a new migration file)"
    )
