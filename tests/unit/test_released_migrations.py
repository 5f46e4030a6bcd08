"""Released migration files are frozen: sql/migrations/RELEASED.sha256 lists them by hash.

A database made by a release ran its migration files, and Sisy users' data migrations depend on
``('sisy', '0001_initial')``: editing a released file would leave such databases with a schema
no file describes. A change to the schema ships as a new, numbered migration.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
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


def releases() -> dict[str, list[str]]:
    """{version: the files it released}, from the "# x.y.z" line above each group of hashes."""
    groups: dict[str, list[str]] = {}
    version = None
    for line in RELEASED.read_text(encoding="utf-8").splitlines():
        if re.fullmatch(r"# \d+\.\d+\.\d+", line):
            version = line[2:]
            groups[version] = []
        elif line.strip() and not line.startswith("#"):
            assert version, f"{line!r} follows no '# x.y.z' line: which release shipped it?"
            groups[version].append(line.split(maxsplit=1)[1])
    return groups


def test_each_group_of_hashes_follows_the_version_that_released_it() -> None:
    groups = releases()
    assert groups and all(groups.values()), groups
    assert sorted(path for paths in groups.values() for path in paths) == sorted(released())


@pytest.mark.parametrize("version", sorted(releases()))
def test_released_files_are_the_tagged_release_s(version: str) -> None:
    """Where the release's tag is at hand, its files are compared with it, not with a hash
    someone could have edited along with the file."""
    git = shutil.which("git")
    tag = f"v{version}"
    if (
        not git
        or subprocess.run(
            [git, "rev-parse", "--verify", "--quiet", f"{tag}^{{commit}}"],
            cwd=ROOT,
            capture_output=True,
        ).returncode
    ):
        pytest.skip(f"no git checkout with the tag {tag} here")
    for path in releases()[version]:
        tagged = subprocess.run(
            [git, "show", f"{tag}:{path}"], cwd=ROOT, capture_output=True, check=True
        ).stdout
        assert (ROOT / path).read_bytes() == tagged, f"{path} differs from {tag}'s"
