"""idle: statements per second of a worker with tasks none due for a minute, beyond a plain one.

Each worker connects as a role of its own with log_statement=all, so that
every statement it sends is counted exactly from the server's log (BEGIN,
COMMIT, psycopg_pool's empty connection checks included; not the statements
run inside SQL functions). Needs the server this bench starts (its log).
Yardstick: a worker beside it with SISY_PLANNER_ENABLED=False.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections import Counter
from typing import Any

import psycopg
import psycopg.conninfo
import sqlparse
from sqlparse import tokens

from bench.core import Bench, NotMeasured

# The server's log_line_prefix for this bench: the role's name (%u) says whose
# statement a line is, whatever the worker's sessions are named.
LOG_LINE_PREFIX = "%m [%p] %u %a "
# LOG_LINE_PREFIX then the message; %a may be empty.
STATEMENT_LINE = re.compile(r"\[\d+\] (\S+) (?:\S* )?LOG:  (?:statement|execute [^:]*): (.*)")


def run(bench: Bench) -> None:
    m = bench.mode
    bench.db.reset()
    with (
        bench.progress.phase(
            f"idle: {m.idle_tasks:,} tasks, {m.idle_seconds:g} s",
            12 + m.idle_tasks / 20000 + m.idle_seconds,
        ),
        bench.attempt("idle"),
    ):
        bench.insert_defined(1, m.idle_tasks)
        bench.db.q("ANALYZE sisy_task")
        bench.details["idle"] = result = measure(bench)
        bench.figures["idle_queries_per_s"] = result["difference"]


def measure(bench: Bench) -> dict[str, Any]:
    server = bench.server
    if server is None:
        raise NotMeasured(
            "statement counts come from the embedded server's log (DATABASE_URL is set)"
        )
    roles = {"sisy": "bench_idle_sisy", "plain": "bench_idle_plain"}
    for role in roles.values():
        bench.db.q(f"DROP ROLE IF EXISTS {role}")
        bench.db.q(f"CREATE ROLE {role} LOGIN SUPERUSER")
        bench.db.q(f"ALTER ROLE {role} SET log_statement = 'all'")
    url = {
        key: psycopg.conninfo.make_conninfo(bench.db.url, user=role) for key, role in roles.items()
    }
    try:
        sisy, plain = bench.workers.start_ready(
            [
                ("idle-sisy", bench.concurrency, {"DATABASE_URL": url["sisy"]}),
                (
                    "idle-plain",
                    bench.concurrency,
                    {"DATABASE_URL": url["plain"], "SISY_PLANNER_ENABLED": "False"},
                ),
            ]
        )
        due = bench.db.one(
            "SELECT count(*) FROM sisy_task WHERE next_run < now() + interval '2 min'"
        )
        time.sleep(bench.mode.idle_settle)  # start-up (the planner's first look) is not idle
        start_offset = server.log_path.stat().st_size
        started = time.monotonic()
        time.sleep(bench.mode.idle_seconds)
        bench.workers.check_alive(sisy, plain)
        end_offset = server.log_path.stat().st_size
        seconds = time.monotonic() - started
        bench.workers.stop(sisy, plain)
    finally:
        bench.workers.stop_all()
        for role in roles.values():
            with contextlib.suppress(psycopg.Error):
                bench.db.q(f"DROP ROLE IF EXISTS {role}")
    with open(server.log_path, "rb") as log:
        log.seek(start_offset)
        chunk = log.read(end_offset - start_offset).decode(errors="replace")
    (bench.logs / "idle-statements.log").write_text(chunk)  # kept with --keep-logs
    counts: Counter[str] = Counter()
    heads: dict[str, Counter[str]] = {role: Counter() for role in roles.values()}
    for role, text in logged_statements(chunk):
        if role in heads:
            counts[role] += 1
            heads[role][statement_head(text)] += 1
    sisy_rate = counts[roles["sisy"]] / seconds
    plain_rate = counts[roles["plain"]] / seconds
    return {
        "seconds": seconds,
        "sisy": sisy_rate,
        "plain": plain_rate,
        "difference": sisy_rate - plain_rate,
        "due_within_2_min": due,
        "heads_sisy": heads[roles["sisy"]],
        "heads_plain": heads[roles["plain"]],
    }


def logged_statements(log: str) -> list[tuple[str, str]]:
    """(role, text) of each statement in a stretch of the server's log, in order."""
    statements: list[tuple[str, list[str]]] = []
    for line in log.splitlines():
        match = STATEMENT_LINE.search(line)
        if match:
            statements.append((match.group(1), [match.group(2)]))
        elif line.startswith("\t") and statements:  # a statement's next line
            statements[-1][1].append(line)
    return [(role, "\n".join(lines)) for role, lines in statements]


def statement_head(text: str) -> str:
    """A statement's first line that says something (a named query's comment names it), its
    literals and parameters as ``?``, so that the same statement counts once whatever its values."""
    for line in text.splitlines():
        if line.strip():
            words = [
                "?"
                if token.ttype in tokens.Literal or token.ttype in tokens.Name.Placeholder
                else token.value
                for statement in sqlparse.parse(line)
                for token in statement.flatten()  # type: ignore[no-untyped-call]
            ]
            return " ".join("".join(words).split())[:70]
    return "(empty query: psycopg_pool's connection check)"
