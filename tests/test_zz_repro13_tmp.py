"""Scratch: reproduce issue 13's 'Bad input that still hurts' (deleted afterwards)."""
import datetime as dt
import io
import threading
import time

import pytest
from django.core.management import call_command
from django.db import connection
from django.urls import reverse

from sisy_pg.models import Task, TaskRun, task_with_callable
from tests.conftest import wait_until
from tests.test_admin import form_data
from tests.testapp import jobs

DEEP = '{"a": ' + "[" * 5000 + "]" * 5000 + "}"


def deep_task(label="deep"):
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO sisy_task (label, callable_info, timezone, schedule, userdata) "
            "VALUES (%s, '{\"func_type\": \"function\", \"func_path\": \"tests.testapp.jobs.record\"}', 'UTC', '* * * * * *', %s::jsonb) RETURNING id",
            [label, DEEP],
        )
        return cursor.fetchone()[0]


def show(name, fn):
    try:
        r = fn()
        print(f"REPRO {name}: {r}")
    except BaseException as exc:
        print(f"REPRO {name}: {type(exc).__name__}: {str(exc)[:150]}")


@pytest.mark.django_db
def test_admin_and_cli(admin_client):
    pk = deep_task()
    admin_client.raise_request_exception = True
    show("admin task list", lambda: admin_client.get(reverse("admin:sisy_task_changelist")).status_code)
    show("admin run list", lambda: admin_client.get(reverse("admin:sisy_taskrun_changelist")).status_code)
    show("admin change page", lambda: admin_client.get(reverse("admin:sisy_task_change", args=[pk])).status_code)
    show("sisy list", lambda: call_command("sisy", "list", stdout=io.StringIO()))
    show("sisy show", lambda: call_command("sisy", "show", "deep", stdout=io.StringIO()))
    nested = '{"a": ' + "[" * 500 + "]" * 500 + "}"
    show("form 500 levels", lambda: admin_client.post(reverse("admin:sisy_task_add"), form_data(label="n", userdata=nested)).status_code)
    big = '{"a": "' + "x" * 10_000_000 + '"}'
    show("form 10 MB", lambda: (lambda r: (r.status_code, r.content[:200]))(admin_client.post(reverse("admin:sisy_task_add"), form_data(label="b", userdata=big))))
    t = task_with_callable(jobs.record, label="big-it")
    t.iterations = 2**31
    show("save iterations 2**31", lambda: t.save())
    t = task_with_callable(jobs.record, label="forged\n 99  fake  scheduled  * * * * *\x1b[31m")
    show("label control chars save", lambda: (t.save(), Task.objects.filter(pk=t.pk).exists()))
    out = io.StringIO()
    connection.cursor().execute("DELETE FROM sisy_task WHERE id = %s", [pk])
    show("sisy list with forged label", lambda: (call_command("sisy", "list", stdout=out), out.getvalue()))
    show("R * * * * accepted", lambda: task_with_callable(jobs.record, label="r", schedule="R * * * *").schedule)
    show("0 0 * 2 1#5", lambda: task_with_callable(jobs.record, label="f", schedule="0 0 * 2 1#5").schedule)
    show("0 0 1 * 1#2", lambda: task_with_callable(jobs.record, label="g", schedule="0 0 1 * 1#2").schedule)


def test_r_threads():
    from sisy_pg import schedule
    from croniter import croniter
    got = []
    def one():
        got.append(schedule.next_after("R * * * *", "UTC", dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)))
    threads = [threading.Thread(target=one) for _ in range(6)]
    [t.start() for t in threads]; [t.join() for t in threads]
    print("REPRO R six threads:", sorted({g.minute for g in got}))
    from sisy_pg.schedule import next_after
    a = dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)
    inst = []
    for _ in range(6):
        a = next_after("0 0 */2 * 1", "UTC", a); inst.append(a.strftime("%a %d"))
    print("REPRO */2 + Mon:", inst)


def test_worker(start_worker):
    worker = start_worker()
    pk = deep_task()
    ok = task_with_callable(jobs.record, label="healthy", schedule="* * * * * *"); ok.save()
    time.sleep(6)
    print("REPRO worker deep runs:", list(TaskRun.objects.filter(task_id=pk).values_list("status", flat=True)))
    print("REPRO worker deep task error:", list(Task.objects.filter(pk=pk).values_list("error", flat=True)))
    print("REPRO worker healthy runs:", TaskRun.objects.filter(task=ok, status="succeeded").count())
    print("REPRO worker log tail:", worker.output()[-1500:])
