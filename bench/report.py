"""The bench's report: the markdown table (bench/results/latest.md) and the RESULT line."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from bench.core import Bench
from bench.modes import SCENARIOS

RESULT_KEYS = (
    "lag_p50_ms",
    "lag_p99_ms",
    "enqueue_lag_p50_ms",
    "enqueue_lag_p99_ms",
    "burst_ratio",
    "change_p99_ms",
    "scale_fetch_ratio",
    "idle_queries_per_s",
    "plan_us_per_task",
    "rss_mb",
)
DEFAULT_CONCURRENCY = 64


def result_line(figures: dict[str, float]) -> str:
    """One line a script can read: every key, ``nan`` for a figure not measured."""

    def value(key: str) -> str:
        number = figures.get(key, math.nan)
        if math.isnan(number):
            return "nan"
        if math.isinf(number):
            return "inf"
        return f"{number:.3f}" if key.endswith("ratio") else f"{number:.2f}"

    return "RESULT " + " ".join(f"{key}={value(key)}" for key in RESULT_KEYS)


def fmt(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if math.isinf(value):
        return "∞"
    return f"{value:,.{digits}f}"


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("**met**" if ok else "**not met**")


def check(value: float | None, test: Callable[[float], bool]) -> bool | None:
    if value is None or math.isnan(value):
        return None
    return test(value)


def report(bench: Bench, only: list[str], info: dict[str, str], load_end: str, took: float) -> str:
    """The whole markdown report of a run of the scenarios ``only``."""
    m, c = bench.mode, bench.concurrency
    lines = [
        f"# sisy-pg benchmarks, {m.name} mode ({info['date']})",
        "",
        f"- machine: {info['machine']}",
        (
            f"- versions: Python {info['python']}, Django {info['django']}, procrastinate "
            f"{info['procrastinate']}, psycopg {info['psycopg']}, PostgreSQL {info['postgresql']}"
        ),
        f"- sisy-pg commit: {info['commit']}",
        (
            f"- load average (1/5/15 min) at start: {info['load']}; at end: {load_end}; "
            f"the run took {took / 60:.1f} min"
        ),
        "- command: `.venv/bin/python -m bench"
        + ("" if m.name == "full" else f" --{m.name}")
        + (f" --concurrency {c}" if c != DEFAULT_CONCURRENCY else "")
        + (f" --only {','.join(only)}" if len(only) < len(SCENARIOS) else "")
        + "`",
        "",
        *figures_table(bench, only),
        "",
        "## Details",
        "",
        *details(bench),
    ]
    if bench.problems:
        lines += ["Not measured or failed:", ""]
        lines += [f"- {p}" for p in bench.problems]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def lag_cell(s: dict[str, Any]) -> str:
    if not s:
        return "n/a"
    return (
        f"p50 {fmt(s['p50'])} ms, p99 {fmt(s['p99'])} ms "
        f"({s['started']:,}/{s['expected']:,} started)"
    )


def p50_p99(s: dict[str, Any]) -> str:
    return f"p50 {fmt(s['p50'])} ms, p99 {fmt(s['p99'])} ms" if s else "n/a"


def figures_table(bench: Bench, only: list[str]) -> list[str]:
    """Each RESULT figure (and the metrics scenario's) beside its yardstick and its target."""
    m, d, f, c = bench.mode, bench.details, bench.figures, bench.concurrency
    lag_s, lag_p = d.get("lag_sisy", {}), d.get("lag_periodic", {})
    enqueue = d.get("enqueue", {})
    enqueue_task, enqueue_put = enqueue.get("task_started", {}), enqueue.get("enqueued", {})
    burst_s, burst_p = d.get("burst_sisy", {}), d.get("burst_procrastinate", {})
    change = d.get("change", {})
    fetch, plan, parked = d.get("fetch", {}), d.get("plan", {}), d.get("parked", {})
    idle, rss = d.get("idle", {}), d.get("rss", {})
    plan_small, plan_big = plan.get("small", {}), plan.get("big", {})
    plan_ratio = (
        plan_big["cpu_us"] / plan_small["cpu_us"]
        if plan_small.get("cpu_us") and plan_big.get("cpu_us")
        else math.nan
    )
    big = f"{m.big:,}"
    change_verdict = verdict(check(f.get("change_p99_ms"), lambda v: v <= 100))
    if change.get("fires_after_change_ran"):
        change_verdict = "**not met** (old fires ran)"
    lines = [
        "| figure | scenario | sisy-pg | yardstick (same run) | target | verdict |",
        "|---|---|---|---|---|---|",
        (
            f"| lag_p50_ms / lag_p99_ms | {m.lag_tasks} tasks on `* * * * * *` for "
            f"{m.lag_seconds:g} s, `--concurrency {c}`; started_at - instant | {lag_cell(lag_s)} "
            f"| procrastinate periodic tasks, same cron and worker: {lag_cell(lag_p)} "
            f"| p99 ≤ 50 ms | {verdict(check(f.get('lag_p99_ms'), lambda v: v <= 50))} |"
        ),
        (
            f"| enqueue_lag_p50_ms / enqueue_lag_p99_ms | the same {m.lag_tasks} schedules of a "
            f"Django task (`@task` no-op, sisy-pg's ProcrastinateBackend, the same worker); "
            f"task_started_at - instant | "
            + (
                f"task started: {p50_p99(enqueue_task)} ({enqueue_task['started']:,}"
                f"/{enqueue_task['expected']:,} succeeded); enqueued: {p50_p99(enqueue_put)}"
                if enqueue_task
                else "n/a"
            )
            + f" | plain callable (lag above): {p50_p99(lag_s)}; "
            f"procrastinate periodic: {p50_p99(lag_p)} | — | — |"
        ),
        (
            f"| burst_ratio | {m.burst:,} no-op runs due at one instant, `--concurrency 8`: "
            f"instant → last run finished | {fmt(burst_s.get('seconds'), 2)} s "
            f"| {m.burst:,} plain procrastinate no-op jobs batch-deferred: commit → last finished "
            f"{fmt(burst_p.get('seconds'), 2)} s; ratio **{fmt(f.get('burst_ratio'), 2)}** "
            f"| ≤ 1.3 | {verdict(check(f.get('burst_ratio'), lambda v: v <= 1.3))} |"
        ),
        (
            f"| change_p99_ms | raw SQL `UPDATE sisy_task SET schedule` → next_run rewritten, "
            f"{change.get('all', {}).get('n', 0)} samples | p50 "
            f"{fmt(change.get('all', {}).get('p50'))} ms, p99 {fmt(f.get('change_p99_ms'))} ms; "
            f"fires claimed before the change that still ran: "
            f"{change.get('fires_after_change_ran', 'n/a')} of "
            f"{change.get('fires_after_change', 'n/a')} | — "
            f"| ≤ 100 ms, and no old fire runs | {change_verdict} |"
        ),
        (
            f"| scale_fetch_ratio | procrastinate_fetch_job_v2 of an unrelated job, {big} tasks "
            f"defined | {fmt(fetch.get('big'), 3)} ms | same fetch, the tasks then truncated: "
            f"{fmt(fetch.get('none_beside'), 3)} ms (at the bench's start: "
            f"{fmt(fetch.get('none_start'), 3)}, end: {fmt(fetch.get('none_end'), 3)}); "
            f"ratio **{fmt(f.get('scale_fetch_ratio'), 2)}** "
            f"| ≤ 1.1 | {verdict(check(f.get('scale_fetch_ratio'), lambda v: v <= 1.1))} |"
        ),
        (
            f"| idle_queries_per_s | {m.idle_tasks:,} tasks, none due for a minute, "
            f"{idle.get('seconds', m.idle_seconds):.0f} s: statements/s | "
            f"{fmt(idle.get('sisy'), 2)}/s; beyond the yardstick **{fmt(f.get('idle_queries_per_s'), 2)}/s** "
            f"| worker with SISY_PLANNER_ENABLED=False: {fmt(idle.get('plain'), 2)}/s "
            f"| ≤ 2 | {verdict(check(f.get('idle_queries_per_s'), lambda v: v <= 2))} |"
        ),
        (
            f"| plan_us_per_task | planner's fire_due on {m.plan_due} due tasks (rolled back), "
            f"CPU per task | {big} defined: **{fmt(plan_big.get('cpu_us'))} µs**; "
            f"{m.plan_small:,} defined: {fmt(plan_small.get('cpu_us'))} µs; "
            f"ratio {fmt(plan_ratio, 2)} | procrastinate fetch with one parked job per task: "
            f"{m.plan_small:,}: {fmt(parked.get(m.plan_small), 3)} ms, {m.parked_big:,}: "
            f"{fmt(parked.get(m.parked_big), 3)} ms "
            f"| flat: big ≤ 1.5x small | {verdict(check(plan_ratio, lambda v: v <= 1.5))} |"
        ),
        (
            f"| rss_mb | worker RSS, {big} tasks defined, after {rss.get('seconds', m.rss_settle):g} s "
            f"| {fmt(f.get('rss_mb'))} MB | worker with SISY_PLANNER_ENABLED=False: "
            f"{fmt(rss.get('plain'))} MB | ≤ 150 MB "
            f"| {verdict(check(f.get('rss_mb'), lambda v: v <= 150))} |"
        ),
    ]
    if "metrics" in only:
        mx = d.get("metrics", {})
        empty, few, beside = mx.get("empty", {}), mx.get("few", {}), mx.get("beside", {})
        lines.append(
            f"| metrics_scrape_ratio | a whole scrape (`SELECT * FROM sisy_metrics_v1()`, one "
            f"statement, timed by a client of its own; median of {m.metrics_repeat}), "
            f"{mx.get('tasks', 100)} tasks, "
            f"{mx.get('history', m.metrics_history):,} finished runs in the history "
            f"| {fmt(beside.get('sql_ms'), 3)} ms (`sisy_pg.metrics.exposition()`, the text "
            f"Prometheus gets: {fmt(beside.get('python_ms'), 2)} ms) "
            f"| {mx.get('small', 0):,} runs: {fmt(few.get('sql_ms'), 3)} ms (exposition "
            f"{fmt(few.get('python_ms'), 2)} ms); ratio **{fmt(f.get('metrics_scrape_ratio'), 2)}**; "
            f"no run at all: {fmt(empty.get('sql_ms'), 3)} ms; the same counters computed "
            f"from the history: {fmt(mx.get('history_query_ms'), 1)} ms "
            f"| ≤ 1.5 | {verdict(check(f.get('metrics_scrape_ratio'), lambda v: v <= 1.5))} |"
        )
    return lines


def details(bench: Bench) -> list[str]:
    """What each scenario measured beyond its figure: the distributions, the statements."""
    m, d = bench.mode, bench.details
    lag_s, lag_p = d.get("lag_sisy", {}), d.get("lag_periodic", {})
    enqueue = d.get("enqueue", {})
    enqueue_task, enqueue_put = enqueue.get("task_started", {}), enqueue.get("enqueued", {})
    burst_s, burst_p = d.get("burst_sisy", {}), d.get("burst_procrastinate", {})
    change, plan = d.get("change", {}), d.get("plan", {})
    idle, rss, create = d.get("idle", {}), d.get("rss", {}), d.get("create", {})
    plan_small, plan_big = plan.get("small", {}), plan.get("big", {})
    big = f"{m.big:,}"
    lines: list[str] = []
    if lag_s or lag_p or enqueue_task:
        lines += [
            (
                "Lag (ms; an expected instant that did not start counts as ∞, and so does a "
                "Django task's run that did not end succeeded):"
            ),
            "",
            "| system | started / expected | p50 | p95 | p99 | max | worker CPU per run |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for name, s in (
            ("sisy-pg", lag_s),
            ("procrastinate periodic", lag_p),
            ("sisy-pg, Django task: run started", enqueue.get("run_started", {})),
            ("sisy-pg, Django task: enqueued", enqueue_put),
            ("sisy-pg, Django task: task started (run succeeded)", enqueue_task),
        ):
            if s:
                cpu = s.get("cpu_ms")
                lines.append(
                    f"| {name} | {s['started']:,} / {s['expected']:,} | {fmt(s['p50'])} "
                    f"| {fmt(s['p95'])} | {fmt(s['p99'])} | {fmt(s['max'])} "
                    f"| {'—' if cpu is None else fmt(cpu, 2) + ' ms'} |"
                )
        if lag_s.get("statuses"):
            lines.append(f"\nsisy-pg runs in the window by status: {lag_s['statuses']}")
        if enqueue_task.get("statuses"):
            lines.append(
                f"\nsisy-pg runs of the Django task in the window by status: "
                f"{enqueue_task['statuses']}"
            )
        lines.append("")
    if burst_s or burst_p:
        lines += [
            "Burst:",
            "",
            (
                f"- sisy-pg: {fmt(burst_s.get('seconds'), 2)} s "
                f"({fmt(burst_s.get('per_s'), 0)} runs/s; first run started "
                f"{fmt(burst_s.get('first_start_ms'))} ms after the instant; statuses "
                f"{burst_s.get('statuses', {})}; tasks inserted {fmt(burst_s.get('lead_s'), 1)} s "
                "before the instant)"
            ),
            (
                f"- procrastinate: {fmt(burst_p.get('seconds'), 2)} s "
                f"({fmt(burst_p.get('per_s'), 0)} jobs/s)"
            ),
            "",
        ]
    if change:
        lines += [
            "Schedule changes (ms from sending the UPDATE until the new next_run is read):",
            "",
            "| change | samples | p50 | p95 | p99 | max |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for kind in ("far → near", "near → far", "all"):
            s = change.get(kind, {})
            if s:
                lines.append(
                    f"| {kind} | {s['n']} | {fmt(s['p50'])} | {fmt(s['p95'])} "
                    f"| {fmt(s['p99'])} | {fmt(s['max'])} |"
                )
        lines += [
            "",
            (
                f"Fires of the every-second schedule already claimed when it became yearly: "
                f"{change.get('fires_after_change', 0)} over {change.get('changes_to_far', 0)} "
                f"changes; of them started anyway: {change.get('fires_after_change_ran', 0)} "
                f"(must be 0). Timeouts (> 5 s): {change.get('timeouts', 0)}."
            ),
            "",
        ]
    if plan:
        lines += [
            f"Planning {m.plan_due} due tasks (fire_due, rolled back; µs per task):",
            "",
            "| defined tasks | wall (median) | CPU bench process | CPU server backend | CPU total |",
            "|---:|---:|---:|---:|---:|",
        ]
        for s in (plan_small, plan_big):
            if s:
                lines.append(
                    f"| {s['defined']:,} | {fmt(s['wall_us'])} | {fmt(s['client_us'])} "
                    f"| {fmt(s['server_us'])} | {fmt(s['cpu_us'])} |"
                )
        lines.append("")
    if idle:
        lines += [
            (
                f"Idle statements in {idle['seconds']:.1f} s (tasks due within 2 min: "
                f"{idle['due_within_2_min']}), by statement:"
            ),
            "",
            "| statement | sisy-pg worker | plain worker |",
            "|---|---:|---:|",
        ]
        heads = set(idle["heads_sisy"]) | set(idle["heads_plain"])
        for head in sorted(heads, key=lambda h: -(idle["heads_sisy"][h] + idle["heads_plain"][h])):
            lines.append(
                f"| `{head.replace('|', '/')}` | {idle['heads_sisy'][head]} "
                f"| {idle['heads_plain'][head]} |"
            )
        lines.append("")
    if rss:
        lines.append(
            f"RSS: {rss['defined']:,} tasks defined, {rss['unplanned']} unplanned at the "
            f"sample; sisy-pg {fmt(rss['sisy'])} MB, plain {fmt(rss['plain'])} MB.\n"
        )
    if create:
        lines.append(
            f"Creating tasks through the public API (`task_with_callable` + "
            f"`Task.objects.bulk_create(batch_size=1000)`): {create['n']:,} tasks in "
            f"{create['total_s']:.2f} s (building and validating {create['build_s']:.2f} s, "
            f"inserting {create['insert_s']:.2f} s)"
            + (
                f"; 100,000 extrapolated: {create['per_100k_s']:.1f} s.\n"
                if create["extrapolated"]
                else ".\n"
            )
        )
    if "seq_scans" in d:
        lines.append(
            f"Hot query plans at {big} tasks: "
            + (
                "plans-smoke.txt with the workers' logs (--keep-logs) "
                if m.name == "smoke"
                else f"bench/results/plans-{m.name}.txt "
            )
            + (
                "(sequential scans of sisy tables: " + ", ".join(d["seq_scans"]) + ")"
                if d["seq_scans"]
                else "(index ranges only, no sequential scan of sisy_task or sisy_taskrun)"
            )
            + (
                ""
                if d.get("auto_explain")
                else "; this server has no auto_explain, so statements inside plpgsql "
                "functions are not shown"
            )
            + ".\n"
        )
    if d.get("metrics"):
        mx = d["metrics"]
        lines.append(
            f"Metrics: a scrape after 1,000 runs finished since the last one (it folds them): "
            f"{fmt(mx['changed_ms'], 2)} ms (median of 5, from a client). The trigger "
            f"that counts a run costs an insert of finished runs {fmt(mx['trigger_us'], 1)} µs a "
            f"run (the insert alone: {fmt(mx['insert_us'], 1)} µs a run); the history was "
            f"written in {fmt(mx['fill_s'], 1)} s.\n"
        )
    return lines
