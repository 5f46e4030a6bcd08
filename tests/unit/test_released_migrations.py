"""Released migration files are frozen: sql/migrations/RELEASED.sha256 lists them by hash.

A database made by a release ran its migration files, and Sisy users' data migrations depend on
``('sisy', '0001_initial')``: editing a released file would leave such databases with a schema
no file describes. A change to the schema ships as a new, numbered migration.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RELEASED = ROOT / "sql" / "migrations" / "RELEASED.sha256"
NUMBER = re.compile(r"^(\d{4})_")


def released() -> dict[str, str]:
    """{path relative to the checkout: SHA-256} of every released migration file."""
    files = {}
    for line in RELEASED.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            digest, path = line.split(maxsplit=1)
            files[path] = digest
    return files


def migration_files() -> list[str]:
    """Every migration file of the checkout: the SQL ones and Django's."""
    return sorted(
        str(path.relative_to(ROOT))
        for path in [
            *(ROOT / "sql" / "migrations").glob("*.sql"),
            *(ROOT / "sisy_pg" / "migrations").glob("[0-9]*.py"),
        ]
    )


def number(path: str) -> int:
    match = NUMBER.match(Path(path).name)
    assert match, f"{path}: a migration file's name starts with its number"
    return int(match.group(1))


@pytest.mark.parametrize("path", sorted(released()))
def test_a_released_migration_file_is_unchanged(path: str) -> None:
    file = ROOT / path
    assert file.is_file(), f"{path} was released (sql/migrations/RELEASED.sha256): keep it"
    digest = hashlib.sha256(file.read_bytes()).hexdigest()
    assert digest == released()[path], (
        f"{path} was released and must never change: restore it and put the change in a "
        "new migration (docs/concepts.md#the-upgrade-rule)"
    )


def test_every_migration_up_to_the_last_released_number_was_released() -> None:
    """A file slipped in among released numbers would run after databases passed that point."""
    last_released = max(number(path) for path in released())
    unlisted = [
        path
        for path in migration_files()
        if number(path) <= last_released and path not in released()
    ]
    assert not unlisted, f"not released, yet numbered at or below {last_released:04}: {unlisted}"


def test_the_list_names_the_release_of_each_file() -> None:
    """Each group of hashes follows the version that released it."""
    lines = [line for line in RELEASED.read_text(encoding="utf-8").splitlines() if line.strip()]
    first_hash = next(i for i, line in enumerate(lines) if not line.startswith("#"))
    assert re.fullmatch(r"# \d+\.\d+\.\d+", lines[first_hash - 1]), lines[first_hash - 1]
