"""plans: EXPLAIN (ANALYZE, BUFFERS) of sisy-pg's hot queries at the big size.

Each query of sisy_pg/sql/queries.sql the planner and the runner send most,
in a transaction rolled back, beside tasks due and tasks waiting to be
planned and a history of finished runs; then the statements inside the SQL
functions it calls: auto_explain's nested plans when the server has it, else
the body of each LANGUAGE sql function with its arguments put in its place.
Any sequential scan of sisy_task or sisy_taskrun is flagged in the report.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import sqlparse
from sqlparse import sql, tokens

from bench.core import Bench

HOT_QUERIES = ("claim_due", "planner_state", "tasks_to_plan", "start_runs", "finish_run")
AUTO_EXPLAIN = (
    ("auto_explain.log_min_duration", "0"),
    ("auto_explain.log_analyze", "on"),
    ("auto_explain.log_buffers", "on"),
    ("auto_explain.log_nested_statements", "on"),
    ("auto_explain.log_level", "notice"),
    ("client_min_messages", "notice"),
)
SEQ_SCAN = re.compile(r"Seq Scan on (sisy_task|sisy_taskrun)\b")


def explain_hot_queries(bench: Bench) -> None:
    """The plans go to ``bench.plans``; which queries scan a sisy table to ``bench.details``."""
    defined = bench.db.one("SELECT count(*) FROM sisy_task")
    # A run history, so that the plans are those of a table in use.
    history = min(defined, 50_000)
    bench.db.q(
        """INSERT INTO sisy_taskrun (task_id, scheduled_for, status, queued_at, started_at,
                                   finished_at)
           SELECT id, now() - interval '1 day', 'succeeded', now() - interval '1 day',
                  now() - interval '1 day', now() - interval '1 day'
             FROM sisy_task ORDER BY id LIMIT %s""",
        [history],
    )
    bench.db.q("ANALYZE sisy_task, sisy_taskrun")
    try:
        explain(bench, defined, history)
    finally:
        bench.db.q("TRUNCATE sisy_taskrun")


def explain(bench: Bench, defined: int, history: int) -> None:
    from sisy_pg import sql_files

    queries = sql_files.queries()
    params: dict[str, Any] = {
        "limit": bench.mode.plan_due,
        "lead": dt.timedelta(seconds=0.2),
        "stalled_after": dt.timedelta(seconds=30),
    }
    out = [
        (
            f"EXPLAIN (ANALYZE, BUFFERS) of sisy-pg's hot queries, {defined:,} tasks defined "
            f"({bench.mode.plan_due} due, {bench.mode.plan_due} waiting to be planned, "
            f"{history:,} finished runs in the history), "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
            f"PostgreSQL {bench.db.one('SHOW server_version')}."
        ),
        (
            "Each runs in a transaction that is rolled back. Statements inside the SQL "
            "functions a query calls are shown after it (auto_explain when the server has it, "
            "else the body of a LANGUAGE sql function with its arguments substituted)."
        ),
        "",
    ]
    seq_scans: set[str] = set()
    auto_explain = auto_explain_available(bench.db.url)
    notices: list[str] = []
    with psycopg.connect(bench.db.url, autocommit=True) as conn:
        conn.add_notice_handler(lambda diag: notices.append(diag.message_primary or ""))
        for name in HOT_QUERIES:
            if name not in queries:
                out += [f"== {name}: not in queries.sql any more", ""]
                continue
            body = strip_comments(queries[name])
            with conn.transaction(force_rollback=True):
                make_due_and_pending(bench, conn)
                params = {**params, **runner_params(conn, name, queries)}
                if auto_explain:
                    conn.execute("LOAD 'auto_explain'")
                    for setting, value in AUTO_EXPLAIN:
                        conn.execute(f"SET LOCAL {setting} = {value}")
                notices.clear()
                cursor = psycopg.ClientCursor(conn)
                cursor.execute(
                    "EXPLAIN (ANALYZE, BUFFERS) " + body, params if "%(" in body else None
                )
                plan = "\n".join(row[0] for row in cursor.fetchall())
                inner = [] if auto_explain else inner_plans(conn, body, params)
                nested = [
                    notice
                    for notice in notices
                    if ("Query Text" in notice or "Scan" in notice)
                    and "Query Text: EXPLAIN" not in notice
                ]
            out += [f"== {name}", body, "", plan, ""]
            for text in [*nested, *inner]:
                out += ["-- inside:", text, ""]
            if any(SEQ_SCAN.search(text) for text in [plan, *nested, *inner]):
                seq_scans.add(name)
    bench.details["seq_scans"] = sorted(seq_scans)
    bench.details["auto_explain"] = auto_explain
    bench.plans = out


def auto_explain_available(url: str) -> bool:
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("LOAD 'auto_explain'")
        return True
    except psycopg.Error:
        return False


def runner_params(
    conn: psycopg.Connection[Any], name: str, queries: dict[str, str]
) -> dict[str, Any]:
    """For the runner's statements: a job's worth of queued runs (started, for finish_run)."""
    if name not in ("start_runs", "finish_run"):
        return {}
    run_ids = [
        row[0]
        for row in conn.execute(
            """INSERT INTO sisy_taskrun (task_id, scheduled_for, status)
               SELECT id, now() - interval '1 ms', 'queued' FROM sisy_task
                WHERE label LIKE 'explain-due-%%' ORDER BY id LIMIT 10
               RETURNING id"""
        ).fetchall()
    ]
    start = {
        "run_ids": run_ids,
        "job_id": None,
        "worker": "bench",
        "stalled_after": dt.timedelta(seconds=30),
        "default_grace": dt.timedelta(seconds=60),
    }
    if name == "start_runs":
        return start
    conn.execute(queries["start_runs"], start)
    return {
        "run_id": run_ids[0],
        "status": "succeeded",
        "error": "",
        "traceback": "",
        "queue": "sisy",
        "task_name": "sisy.run",
    }


def make_due_and_pending(bench: Bench, conn: psycopg.Connection[Any]) -> None:
    """Inside the EXPLAIN's transaction: tasks due, and tasks waiting to be planned."""
    conn.execute(
        """INSERT INTO sisy_task (label, callable_info, schedule, timezone)
           SELECT 'explain-pending-' || n, %s::jsonb, '* * * * *', 'UTC'
             FROM generate_series(1, %s) AS n""",
        [bench.callable_info, bench.mode.plan_due],
    )
    conn.execute(
        """INSERT INTO sisy_task (label, callable_info, schedule, timezone, next_run)
           SELECT 'explain-due-' || n, %s::jsonb, '* * * * *', 'UTC', now() - interval '1 ms'
             FROM generate_series(1, %s) AS n""",
        [bench.callable_info, bench.mode.plan_due],
    )


def inner_plans(conn: psycopg.Connection[Any], body: str, params: dict[str, Any]) -> list[str]:
    """EXPLAIN the body of each LANGUAGE sql function the query calls, arguments in place."""
    results = []
    for function, arguments in sisy_calls(body):
        rows = conn.execute(
            """SELECT l.lanname, p.prosrc, p.proargnames
                 FROM pg_proc AS p JOIN pg_language AS l ON l.oid = p.prolang
                WHERE p.proname = %s""",
            [function],
        ).fetchall()
        if not rows:
            continue
        language, source, arg_names = rows[0]
        if language != "sql":
            results.append(
                f"{function} is LANGUAGE {language}: its statements' plans need auto_explain "
                "(run with SISY_PG_BINDIR pointing at a PostgreSQL that has it)"
            )
            continue
        statements = sqlparse.split(strip_comments(source))
        if len(statements) != 1:
            results.append(f"{function}: several statements, not explained by hand")
            continue
        literals = [psycopg.ClientCursor(conn).mogrify(arg, params).strip() for arg in arguments]
        statement = with_arguments(statements[0].rstrip(";"), arg_names or [], literals)
        with conn.transaction(force_rollback=True):
            plan = conn.execute("EXPLAIN (ANALYZE, BUFFERS) " + statement).fetchall()
        results.append(
            f"{function}({', '.join(literals)}), its body:\n"
            + statement
            + "\n\n"
            + "\n".join(row[0] for row in plan)
        )
    return results


def strip_comments(text: str) -> str:
    """``text`` without its comments, and without the lines they leave blank."""
    stripped = sqlparse.format(text, strip_comments=True)
    return "\n".join(line for line in stripped.splitlines() if line.strip())


def sisy_calls(text: str) -> Iterator[tuple[str, list[str]]]:
    """(name, argument texts) of each call of a sisy function in ``text``, in order."""

    def calls(group: sql.TokenList) -> Iterator[sql.Function]:
        for token in group.get_sublists():  # type: ignore[no-untyped-call]
            if isinstance(token, sql.Function):
                yield token
            yield from calls(token)

    for statement in sqlparse.parse(text):
        for call in calls(statement):
            name = call.get_name()  # type: ignore[no-untyped-call]
            if name and name.startswith("sisy_"):
                yield name, call_arguments(call)


def call_arguments(call: sql.Function) -> list[str]:
    """The texts of a call's arguments: its parentheses' tokens split at their own commas."""
    parenthesis = next(token for token in call.tokens if isinstance(token, sql.Parenthesis))
    arguments, depth = [""], 0
    for token in list(parenthesis.flatten())[1:-1]:  # type: ignore[no-untyped-call]
        depth += token.match(tokens.Punctuation, "(") - token.match(tokens.Punctuation, ")")
        if depth == 0 and token.match(tokens.Punctuation, ","):
            arguments.append("")
        else:
            arguments[-1] += token.value
    return [argument.strip() for argument in arguments if argument.strip()]


def with_arguments(body: str, names: list[str], literals: list[str]) -> str:
    """A SQL function's body with its arguments, by name or by number ($1), as literals."""
    # A call may leave out the arguments that have defaults.
    by_reference = dict(zip(names, literals, strict=False))
    by_reference.update({f"${index}": literal for index, literal in enumerate(literals, 1)})
    return "".join(
        f"({by_reference[token.value]})"
        if token.value in by_reference
        and (token.ttype in tokens.Name or token.ttype in tokens.Name.Placeholder)
        else token.value
        for statement in sqlparse.parse(body)
        for token in statement.flatten()  # type: ignore[no-untyped-call]
    )
