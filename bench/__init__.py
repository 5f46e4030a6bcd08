"""sisy-pg's benchmarks, each beside its yardstick, in one run, measured from the outside.

    .venv/bin/python -m bench --quick          # < 5 min on 2 cores
    .venv/bin/python -m bench                  # full mode, for the docs (~20-30 min)
    .venv/bin/python -m bench --smoke          # tiny sizes: checks the bench itself
    .venv/bin/python -m bench --quick --only lag,burst

Everything runs on a real PostgreSQL (a throwaway one from devtools.embedded_pg
unless DATABASE_URL is set; a fresh database on it either way) and real stock
``python -m django procrastinate worker`` processes (DJANGO_SETTINGS_MODULE=
bench.settings). sisy-pg is only touched through its public surfaces: the
Python API (``Task``, ``task_with_callable``), SQL on ``sisy_task``, reads of
``sisy_taskrun`` and ``sisy_task.next_run``, and procrastinate's own tables and
functions; two in-process figures use the planner (``plan``) and the named
queries (``sisy_pg.sql_files.queries()``, read at run time).

Scenarios (quick / full), each with its yardstick in the same run, each a
module of bench/scenarios (``--only`` picks among lag, enqueue, burst,
change, scale and metrics; scale runs fetch, planning, create, idle, rss and
plans on one growing table):

- lag: 50 tasks on ``* * * * * *`` for 30 s / 120 s, one worker
  ``--concurrency 64`` (``--concurrency`` changes it; docs/operations.md's
  advice: a slot for each run due at the busiest instant); lag =
  started_at - scheduled_for (database clock).
  Yardstick: 50 procrastinate periodic tasks on the same cron.
- enqueue: the same 50 schedules, of a Django task (``@task`` no-op on
  sisy-pg's ProcrastinateBackend, so a procrastinate job on the same worker),
  for 30 s / 120 s: lag = details.task_started_at - scheduled_for (the task's
  start), and details.enqueued_at - scheduled_for (the enqueue); every run
  must end succeeded. Beside it: the lag scenario's figures (run both).
- burst: 2,000 / 10,000 no-op tasks due at one instant T, an idle worker
  ``--concurrency 8``: max(finished_at) - T. Yardstick: as many plain
  procrastinate no-op jobs batch-deferred in one transaction: commit to the
  last 'succeeded' event.
- change: raw ``UPDATE sisy_task SET schedule`` until next_run is rewritten
  (polled every ~1 ms), 200 samples alternating a pending fire a year away and
  one under a second away (an every-second task); fires of the old schedule
  after the change must not run.
- scale: procrastinate_fetch_job_v2 of an unrelated job (timed on the server in
  a loop, each call rolled back; median) with 200,000 / 1,000,000 tasks defined
  vs none: the same database right after, sisy-pg's tables truncated (the
  bench's first and last measures are shown too).
- idle: 100,000 tasks, none due for a minute: statements/s of a worker minus
  those of a worker with SISY_PLANNER_ENABLED=False, counted exactly from the
  server's log: each worker connects as a role of its own with
  log_statement=all, and every statement it sends counts (BEGIN, COMMIT,
  psycopg_pool's empty connection checks included; not the statements run
  inside SQL functions). Needs the server this bench starts (its log).
- planning: CPU (client + server backend) of the planner's fire_due on 100 due
  tasks, rolled back, at 1,000 and at 200,000 / 1,000,000 defined tasks.
  Yardstick: procrastinate's fetch with one parked future job per task.
- rss: worker RSS with 200,000 / 1,000,000 tasks, after it ran a while.
- create: 100,000 tasks through ``Task.objects.bulk_create`` (quick: 20,000,
  extrapolated).
- plans: EXPLAIN (ANALYZE, BUFFERS) of the hot queries at the big size, and of
  the statements inside the SQL functions they call, to
  bench/results/plans-<mode>.txt.
- metrics: a whole scrape (``sisy_metrics_v1``, timed from the client, and
  ``sisy_pg.metrics.exposition()``), 100 tasks, beside 200,000 / 1,000,000
  finished runs vs 1,000 (and none); a scrape that folds 1,000 runs finished
  since the last; the trigger's cost per inserted run (the insert with it
  disabled). Yardstick: the same counters computed from the history.

bench/report.py writes the table to bench/results/latest.md (and full-<date>.md in full mode);
a progress bar goes to stderr; stdout ends with one line
``RESULT lag_p50_ms=... lag_p99_ms=... enqueue_lag_p50_ms=... enqueue_lag_p99_ms=...
burst_ratio=... change_p99_ms=...
scale_fetch_ratio=... idle_queries_per_s=... plan_us_per_task=... rss_mb=...``
(``nan`` for a figure that could not be measured).
"""
