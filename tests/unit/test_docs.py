"""The documentation stays true to the code and to itself (no database needed).

* every link of README.md and docs/*.md to a file of the repository leads to a file
  that exists and, for a Markdown file, to one of its headings; a page of docs/ links
  within docs/ relatively and to the rest of the repository absolutely (the site is built
  from docs/ alone: docs/conf.py), and README.md links only absolutely (the package
  index shows it outside the repository);
* every SISY_ setting of sisy_pg/conf.py is in docs/settings.md's table, with
  its default;
* every public name of sisy.models, and every public method, property and
  field of Task, TaskRun and their queryset, is in docs/api.md.

The code is read with ``ast``, not imported, so Django needs no setting here.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
PAGES = [README, *sorted(DOCS.glob("*.md"))]
REPOSITORY = "https://github.com/sisy-pg/sisy-pg"
# A file or folder of the repository on GitHub; group 1 its path, group 2 the anchor.
REPOSITORY_FILE = re.compile(rf"^{re.escape(REPOSITORY)}/(?:blob|tree)/main/([^#?]*)(?:#(.*))?$")
URL = re.compile(r"^[a-z][a-z0-9+.-]*:", flags=re.IGNORECASE)  # https:, mailto:...

FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", flags=re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`[^`\n]*`")
HTML_COMMENT = re.compile(r"<!--.*?-->", flags=re.DOTALL)
# [text](target) and ![alt](target); the target ends at a space (a title) or ")".
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$", flags=re.MULTILINE)


def prose(text: str) -> str:
    """``text`` without code blocks and HTML comments (links there are not links)."""
    return HTML_COMMENT.sub("", FENCE.sub("", text))


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link: its text
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors of a Markdown file's headings (repeats numbered as GitHub does)."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    for match in HEADING.finditer(FENCE.sub("", path.read_text())):
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(path: Path) -> list[str]:
    return [m.group(1) for m in LINK.finditer(INLINE_CODE.sub("", prose(path.read_text())))]


def repository_paths(path: Path) -> set[str]:
    """The repository paths that ``path`` links absolutely."""
    return {match[1] for target in links(path) if (match := REPOSITORY_FILE.match(target))}


def broken_links(path: Path, root: Path = ROOT) -> list[str]:
    """What is wrong with each link of ``path`` to a file of the repository at ``root``.

    A relative link may not leave the page's folder: outside docs/, the site has no file.
    """
    problems = []
    for target in links(path):
        if match := REPOSITORY_FILE.match(target):
            destination, anchor = root / match[1], match[2]
        elif URL.match(target):
            continue
        else:
            file_part, _, anchor = target.partition("#")
            destination = (path.parent / file_part).resolve() if file_part else path
            if not destination.is_relative_to(path.parent.resolve()):
                problems.append(
                    f"{target}: outside the page's folder: link {REPOSITORY}/blob/main/…"
                )
                continue
        if not destination.exists():
            problems.append(f"{target}: no such file {destination.relative_to(root)}")
            continue
        if anchor and destination.suffix == ".md" and anchor not in anchors(destination):
            problems.append(
                f"{target}: no heading with the anchor #{anchor} in {destination.relative_to(root)}"
            )
    return problems


def test_the_pages_exist():
    names = {page.name for page in PAGES}
    for needed in (
        "index.md",
        "quickstart.md",
        "concepts.md",
        "api.md",
        "settings.md",
        "operations.md",
        "sql.md",
        "admin.md",
        "coming-from-sisy.md",
        "coming-from-celery-beat.md",
    ):
        assert needed in names, needed


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_links_and_anchors_resolve(page):
    assert broken_links(page) == []


def test_the_readme_links_absolutely():
    """The package index shows README.md where a relative link leads nowhere."""
    relative = [target for target in links(README) if not URL.match(target)]
    assert relative == [], f"README.md: link {REPOSITORY}/blob/main/… instead of {relative}"


def test_the_readme_and_the_index_link_every_page():
    readme = repository_paths(README)
    index = {t.partition("#")[0] for t in links(DOCS / "index.md")}
    for page in sorted(DOCS.glob("*.md")):
        if page.name != "index.md":
            assert f"docs/{page.name}" in readme, f"README.md does not link docs/{page.name}"
            assert page.name in index, f"docs/index.md does not link {page.name}"


def test_the_link_checker_finds_what_is_broken(tmp_path):
    (tmp_path / "README.md").write_text("# Benchmarks\n")
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "other.md").write_text("# A title: with `code`\n\n## Twice\n\n## Twice\n")
    page = docs / "page.md"
    blob = f"{REPOSITORY}/blob/main"
    page.write_text(
        "[ok](other.md#a-title-with-code) [ok](other.md#twice-1) [ok](#here)\n"
        f"[ok]({blob}/README.md#benchmarks) [ok]({REPOSITORY}/tree/main/docs) [ok](https://x.org)\n"
        "[bad](missing.md) [bad](other.md#nowhere) ![bad](pics/none.png) [bad](../README.md)\n"
        f"[bad]({blob}/sql/none.sql) [bad]({blob}/README.md#nowhere)\n"
        "`[code](missing.md)`\n\n```\n[fenced](missing.md)\n```\n\n## Here\n"
    )
    problems = broken_links(page, root=tmp_path)
    assert [p.split(": ")[0] for p in problems] == [
        "missing.md",
        "other.md#nowhere",
        "pics/none.png",
        "../README.md",
        f"{blob}/sql/none.sql",
        f"{blob}/README.md#nowhere",
    ]


# --- settings ------------------------------------------------------------------------


def conf_defaults() -> dict[str, object]:
    tree = ast.parse((ROOT / "sisy_pg" / "conf.py").read_text())
    for node in tree.body:
        target = getattr(node, "target", None) or (getattr(node, "targets", None) or [None])[0]
        if isinstance(target, ast.Name) and target.id == "DEFAULTS":
            value: dict[str, object] = ast.literal_eval(node.value)  # type: ignore[attr-defined]
            return value
    raise AssertionError("sisy_pg/conf.py has no DEFAULTS")


def test_every_setting_is_documented_with_its_default():
    text = (DOCS / "settings.md").read_text()
    defaults = conf_defaults()
    assert defaults
    for name, default in defaults.items():
        row = re.search(rf"^\| `SISY_{name}` \| `([^`]*)` \|", text, flags=re.MULTILINE)
        assert row, f"SISY_{name} has no row in docs/settings.md's table"
        assert row.group(1) == repr(default), (
            f"SISY_{name}: docs/settings.md says {row.group(1)}, sisy_pg/conf.py says {default!r}"
        )


# --- API -----------------------------------------------------------------------------


def exported_names() -> list[str]:
    tree = ast.parse((ROOT / "sisy" / "models.py").read_text())
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and isinstance(node.targets[0], ast.Name)
            and node.targets[0].id == "__all__"
        ):
            names: list[str] = ast.literal_eval(node.value)
            return names
    raise AssertionError("sisy/models.py has no __all__")


# Django's own Model API that the models override without changing its meaning.
DJANGO_OVERRIDES = {"validate_unique"}


def public_members() -> list[str]:
    """Task, TaskRun and TaskQuerySet: public methods, properties, fields and constants."""
    tree = ast.parse((ROOT / "sisy_pg" / "models.py").read_text())
    members = []
    for node in tree.body:
        if not (
            isinstance(node, ast.ClassDef) and node.name in ("Task", "TaskRun", "TaskQuerySet")
        ):
            continue
        for item in node.body:
            if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                names = [item.name]
            elif isinstance(item, ast.Assign):
                names = [t.id for t in item.targets if isinstance(t, ast.Name)]
            elif isinstance(item, ast.ClassDef):
                names = [item.name]
            else:
                continue
            members += [
                f"{node.name}.{name}"
                for name in names
                if not name.startswith("_") and name not in DJANGO_OVERRIDES | {"Meta", "objects"}
            ]
    return members


def test_every_public_name_is_in_the_api_reference():
    text = (DOCS / "api.md").read_text()
    names = exported_names()
    assert "task_with_callable" in names
    missing = [name for name in names if not re.search(rf"`[^`]*\b{name}\b", text)]
    assert missing == [], f"docs/api.md does not document {missing}"


def test_every_public_member_of_the_models_is_in_the_api_reference():
    text = (DOCS / "api.md").read_text()
    members = public_members()
    assert "Task.run_asap" in members and "TaskRun.lag" in members
    missing = [m for m in members if not re.search(rf"`[^`]*\b{m.split('.')[1]}\b", text)]
    assert missing == [], f"docs/api.md does not document {missing}"
