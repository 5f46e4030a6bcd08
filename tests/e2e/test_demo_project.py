"""The demo project: Sisy's documented data migrations apply and unapply; the demo runs."""

import os
import subprocess
import sys

from devtools.databases import query
from devtools.workers import ROOT

DEMO = ROOT / "demo"
INSTANCE_TASK = "A suitably unique label for the task"


def run(url, *command, timeout=120):
    env = {**os.environ, "DATABASE_URL": url}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    result = subprocess.run(
        [sys.executable, *command],
        cwd=DEMO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_seed_migrations_apply_and_unapply(fresh_url):
    run(fresh_url, "manage.py", "migrate", "--no-input")
    tasks = dict(query(fresh_url, "SELECT label, callable_info FROM sisy_task"))
    assert tasks["Daily data maintenance"]["func_path"] == "myapp.utilities.daily_maintenance"
    ((foo_pk,),) = query(fresh_url, "SELECT id FROM myapp_modelfoo")
    assert tasks[INSTANCE_TASK] == {
        "func_type": "instancemethod",
        "module_name": "myapp.models",
        "class_name": "ModelFoo",
        "class_path": "myapp.models.ModelFoo",
        "func_name": "InstanceMethod",
        "func_path": "myapp.models.ModelFoo.InstanceMethod",
        "model_pk": foo_pk,
    }
    assert query(fresh_url, "SELECT count(*) FROM sisy_task WHERE next_run IS NOT NULL") == [(4,)]

    # A pending fire of the instance-method task, as a planner leaves it
    # between claiming the instant and a worker starting the run.
    query(
        fresh_url,
        "SELECT sisy_store_decisions_v1('sisy', 'sisy.run', ARRAY[id], ARRAY[now()], "
        "ARRAY['queued'], ARRAY[''], ARRAY['{}'::jsonb], '{}', '{}', '{}', '{}', 1) "
        "FROM sisy_task WHERE label = %s",
        [INSTANCE_TASK],
    )
    ((job_id,),) = query(
        fresh_url,
        "SELECT job_id FROM sisy_taskrun JOIN sisy_task t ON t.id = task_id WHERE t.label = %s",
        [INSTANCE_TASK],
    )
    assert query(fresh_url, "SELECT status FROM procrastinate_jobs WHERE id = %s", [job_id]) == [
        ("todo",)
    ]

    run(fresh_url, "manage.py", "migrate", "myapp", "0004-setup-staticmethod-task")
    assert query(fresh_url, "SELECT count(*) FROM sisy_task WHERE label = %s", [INSTANCE_TASK]) == [
        (0,)
    ]
    assert query(fresh_url, "SELECT count(*) FROM myapp_modelfoo") == [(0,)]
    assert query(fresh_url, "SELECT status FROM procrastinate_jobs WHERE id = %s", [job_id]) == [
        ("cancelled",)
    ]

    run(fresh_url, "manage.py", "migrate", "myapp", "zero")
    assert query(fresh_url, "SELECT count(*) FROM sisy_task") == [(0,)]
    assert query(fresh_url, "SELECT count(*) FROM procrastinate_jobs WHERE status = 'todo'") == [
        (0,)
    ]
    run(fresh_url, "manage.py", "migrate", "sisy", "zero")
    assert query(fresh_url, "SELECT to_regclass('sisy_task'), to_regproc('sisy_claim_due_v1')") == [
        (None, None)
    ]
    run(fresh_url, "manage.py", "migrate", "--no-input")  # and back again
    assert query(fresh_url, "SELECT count(*) FROM sisy_task") == [(4,)]


def test_demo_runs_a_worker_and_prints_a_line_per_fire(fresh_url):
    output = run(fresh_url, str(DEMO / "run_demo.py"), "--seconds", "10")
    fires = [
        line
        for line in output.splitlines()
        if "Heartbeat every 2 seconds" in line and " lag " in line
    ]
    ran = [line for line in fires if " succeeded" in line or " failed  (" in line]
    assert len(ran) >= 2, output
    assert all(
        " succeeded" in line
        or " failed  (RuntimeError: a simulated failure" in line
        # While the worker starts, a fire may find the first run still waiting.
        or " skipped  (coalesced: run " in line
        for line in fires
    ), output
