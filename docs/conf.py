# The documentation site: docs/*.md built by Sphinx with MyST-Parser and the Furo theme.
#
#     .venv/bin/sphinx-build -W --keep-going -q -d build/doctrees docs build/site
#
# builds it into build/site; any warning fails the build: a link to a page, an anchor or an
# image that does not exist, or a page that docs/index.md does not list.
#
# Why these (looked at in 2026-12): MkDocs 1.x has had no release since 1.6.1 (2024-08) and
# its announced 2.0 drops the plugins and themes Material for MkDocs is made of; Material is
# in maintenance mode while its team builds Zensical, which is still 0.x (0.1.4), calls its
# link validation deprecated in its current form and runs no code of ours, so it could not
# check the links to the rest of the repository. Sphinx (9.x, released through 2026) and
# MyST-Parser (5.2, 2026-11) are maintained by teams, Furo (2025.12, made for Sphinx 7 to 9)
# is the theme of pip and procrastinate, and procrastinate's own documentation is built by
# the same three, so its readers find a familiar site. MyST reads the pages as GitHub does:
# each `page.md#anchor` link resolves with GitHub's heading slugs, and a strict build is one
# flag, so the pages stay plain Markdown that reads the same on GitHub.
#
# Files outside docs/ (README.md, sql/, bench/results/) are linked absolutely, as
# https://github.com/sisy-pg/sisy-pg/blob/main/PATH, not copied into the site: one link that
# works on GitHub, on this site and in any copy of a page, and shows Markdown results and SQL
# the way GitHub renders them. tests/unit/test_docs.py makes such a link as strict as a
# relative one (the file and its heading must exist), and refuses a relative link out of docs/.

from __future__ import annotations

import re
from pathlib import Path

from sphinx.application import Sphinx

ROOT = Path(__file__).resolve().parent.parent
REPOSITORY = "https://github.com/sisy-pg/sisy-pg"

project = "sisy-pg"
author = "sisy-pg developers"
release = re.findall(
    r'^__version__ = "([^"]+)"', (ROOT / "sisy_pg" / "__init__.py").read_text(), flags=re.M
)[0]
html_title = f"sisy-pg {release}"
language = "en"

extensions = ["myst_parser", "sphinxcontrib.mermaid"]
source_suffix = {".md": "markdown"}
# docs/concepts.md's diagram: a ```mermaid block, which GitHub draws too; the reader's
# browser draws it here (mermaid.js from its CDN), as tall as the column's width makes it,
# and its button shows it full screen.
myst_fence_as_directive = ["mermaid"]
mermaid_height = "auto"
# The anchors GitHub gives headings, at every level, so `page.md#anchor` works on both.
myst_heading_anchors = 6

html_theme = "furo"
html_theme_options = {
    "source_repository": f"{REPOSITORY}/",
    "source_branch": "main",
    "source_directory": "docs/",
}
html_copy_source = False
html_show_sourcelink = False

INDEX_SECTION = re.compile(r"^## ", flags=re.M)
INDEX_ENTRY = re.compile(r"^- \[([^\]]+)\]\(([\w-]+)\.md\)", flags=re.M)


def add_navigation(app: Sphinx, docname: str, source: list[str]) -> None:
    """Give the index hidden toctrees made of its own sections and links.

    The sidebar then mirrors docs/index.md, which stays plain Markdown on GitHub.
    """
    if docname != app.config.root_doc:
        return
    toctrees = []
    for section in INDEX_SECTION.split(source[0])[1:]:
        title, _, body = section.partition("\n")
        entries = "\n".join(f"{name} <{page}>" for name, page in INDEX_ENTRY.findall(body))
        if entries:
            toctrees.append(f"```{{toctree}}\n:hidden:\n:caption: {title}\n\n{entries}\n```\n")
    source[0] += "\n" + "\n".join(toctrees)


def setup(app: Sphinx) -> None:
    app.connect("source-read", add_navigation)
