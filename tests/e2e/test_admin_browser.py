"""The admin in a real browser: headless Chromium driven by Selenium, against a live
server on the suite's PostgreSQL, with a real worker running the tasks.

An operator's journey: log in, add a task (its schedule described and previewed
as it is typed), run it now and see the run succeed, pause it, and see why a
broken task does not run and what a failed run raised. The window is 1,280 px
wide, the width the list must fit.

Screenshots go to build/screenshots/ (kept by CI as artifacts); docs/screenshots/
holds copies of the best of them, refreshed by hand (see docs/admin.md).

Debian's ``chromium`` and ``chromium-driver`` packages (.ci/run installs them):
Selenium is pointed at their chromedriver, so it never downloads a browser.
Without them, or without Selenium, the test is skipped and says why.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.contrib.staticfiles.handlers import StaticFilesHandler
from django.test.testcases import LiveServerThread

from devtools.workers import ROOT
from sisy_pg.models import Task, TaskRun, task_with_callable
from tests.helpers import wait_until
from tests.testapp import jobs

pytestmark = pytest.mark.browser

SCREENSHOTS = ROOT / "build" / "screenshots"
WIDTH = 1280
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
PASSWORD = "a password for the browser test"
WAIT = 15  # seconds for anything the page or the worker does


def _chromium() -> str:
    for candidate in CHROMIUM:
        if os.access(candidate, os.X_OK):
            return candidate
    pytest.skip(f"no Chromium ({' or '.join(CHROMIUM)}): install Debian's chromium package")


@pytest.fixture
def browser() -> Iterator[object]:
    """Headless Chromium, 1,280 px wide; skipped, saying why, when none can be had."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.chrome.service import Service

    binary = _chromium()
    if not os.access(CHROMEDRIVER, os.X_OK):
        pytest.skip(f"no {CHROMEDRIVER}: install Debian's chromium-driver package")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in (
        "--headless=new",
        f"--window-size={WIDTH},900",
        "--force-device-scale-factor=1",
        "--no-sandbox",  # CI runs as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--lang=en-US",
    ):
        options.add_argument(argument)
    try:
        driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    except WebDriverException as exc:
        pytest.skip(f"Chromium ({binary}) does not start under {CHROMEDRIVER}: {exc.msg}")
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def live_admin(transactional_db, settings) -> Iterator[str]:
    """A live server of the test project, its static files (the admin's CSS) included.

    Served by staticfiles' handler, from the apps' static/ directories: the test
    settings need no STATIC_ROOT (nor the staticfiles app: adding an app at run
    time would make procrastinate register its tasks twice).
    """
    settings.STATIC_URL = "/static/"
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "localhost"]
    server = LiveServerThread("localhost", StaticFilesHandler)
    server.daemon = True
    server.start()
    server.is_ready.wait()
    if server.error:
        raise server.error
    try:
        yield f"http://localhost:{server.port}"
    finally:
        server.terminate()


@pytest.fixture
def screenshot(browser) -> object:
    """``screenshot(name)``: the whole page, 1,280 px wide, to build/screenshots/NAME.png."""
    shutil.rmtree(SCREENSHOTS, ignore_errors=True)
    SCREENSHOTS.mkdir(parents=True)

    def take(name: str) -> Path:
        browser.execute_script("window.scrollTo(0, 0)")
        height = browser.execute_script("return document.documentElement.scrollHeight")
        browser.set_window_size(WIDTH, max(900, min(height + 100, 4000)))
        target = SCREENSHOTS / f"{name}.png"
        browser.save_screenshot(str(target))
        browser.set_window_size(WIDTH, 900)
        return target

    return take


class Admin:
    """The pages the test visits, and what it reads and clicks on them."""

    def __init__(self, driver, url: str) -> None:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import Select, WebDriverWait

        self.driver, self.url, self.by, self.select = driver, url, By, Select
        self.wait = WebDriverWait(driver, WAIT)

    def open(self, path: str) -> None:
        self.driver.get(self.url + path)
        self.loaded()

    def loaded(self) -> None:
        def ready(driver) -> bool:
            state = driver.execute_script("return document.readyState")
            return bool(state == "complete" and driver.find_elements(self.by.ID, "footer"))

        self.wait.until(ready, "the page did not load")

    def find(self, css: str):
        return self.driver.find_element(self.by.CSS_SELECTOR, css)

    def texts(self, css: str) -> list[str]:
        """The rendered text (innerText: displayed or not) of each match, blanks collapsed."""
        return [
            " ".join(e.get_property("innerText").split())
            for e in self.driver.find_elements(self.by.CSS_SELECTOR, css)
        ]

    def type(self, css: str, text: str) -> None:
        field = self.find(css)
        field.clear()
        field.send_keys(text)

    def click(self, css: str) -> None:
        self.submit(self.find(css))

    def submit(self, element) -> None:
        """Click ``element`` and wait for the page it leads to (not the one it is on)."""
        from selenium.webdriver.support.expected_conditions import staleness_of

        element.click()
        self.wait.until(staleness_of(element))
        self.loaded()

    def button(self, label: str) -> None:
        """Click the button of a task's page labelled ``label``."""
        (button,) = [
            b
            for b in self.driver.find_elements(self.by.CSS_SELECTOR, ".object-tools button")
            if b.get_property("textContent").strip() == label
        ]
        self.submit(button)

    def fits(self) -> bool:
        """Whether every column is on screen: neither the page nor the list scrolls sideways."""
        return bool(
            self.driver.execute_script(
                "const table = document.querySelector('#changelist .results');"
                "return document.documentElement.scrollWidth <= window.innerWidth"
                " && table.scrollWidth <= table.clientWidth"
            )
        )

    def messages(self) -> list[str]:
        return self.texts("ul.messagelist li")

    def wait_for_text(self, css: str, text: str) -> str:
        def shown(driver) -> str | bool:
            content = " ".join(self.texts(css))
            return content if text in content else False

        found: str = self.wait.until(shown, f"{text!r} never appeared in {css}")
        return found

    def row(self, label: str) -> str:
        """The text of the task list's row of the task labelled ``label``."""
        for row in self.driver.find_elements(self.by.CSS_SELECTOR, "#result_list tbody tr"):
            text = str(row.get_property("innerText"))
            if text.split("\n")[0].strip() == label:
                return text
        raise AssertionError(f"no row for {label!r} in {self.texts('#result_list th')}")


def test_an_operator_adds_runs_pauses_and_reads_failures(
    browser, live_admin, start_worker, django_user_model, screenshot
):
    start_worker()
    django_user_model.objects.create_superuser("operator", "op@example.com", PASSWORD)
    admin = Admin(browser, live_admin)

    admin.open("/admin/login/?next=/admin/")
    admin.type("#id_username", "operator")
    admin.type("#id_password", PASSWORD)
    admin.click("input[type=submit]")
    assert "Site administration" in browser.title

    # Add a task: the schedule is described and previewed while it is typed.
    admin.open("/admin/sisy/task/add/")
    admin.type("#id_label", "nightly report")
    admin.type("#id_callable_path", "tests.testapp.jobs.record")
    # The time zone is left as offered: the project's (TIME_ZONE), the preview's.
    zone = admin.select(admin.find("#id_timezone")).first_selected_option
    assert zone.get_property("value") == "Europe/Paris"
    admin.type("#id_schedule", "*/5 * * * *")
    admin.wait_for_text("#sisy-schedule-preview", "Every 5 minutes")
    admin.type("#id_schedule", "0 */5 * * * *")  # seconds first, as in Quartz
    admin.wait_for_text("#sisy-schedule-preview", "Did you mean '*/5 * * * * 0'")
    admin.type("#id_schedule", "61 * * * *")
    admin.wait_for_text("#sisy-schedule-preview", "is not valid cron")
    admin.type("#id_schedule", "30 2 * * 1-5")
    preview = admin.wait_for_text("#sisy-schedule-preview", "At 02:30, Monday through Friday")
    assert "Next 5 instants, in Europe/Paris" in preview
    instants = admin.texts("#sisy-schedule-preview li time")
    assert len(instants) == 5 and all(" 02:30:00 CE" in instant for instant in instants)
    assert not any(i.startswith(("Sat", "Sun")) for i in instants)
    screenshot("task-add-form-preview")
    admin.click("input[name=_continue]")
    assert any("was added successfully" in m for m in admin.messages()), admin.messages()
    task = Task.objects.get(label="nightly report")
    assert task.timezone == "Europe/Paris" and task.schedule == "30 2 * * 1-5"
    # The saved schedule is previewed by the page itself.
    assert "At 02:30, Monday through Friday" in admin.texts("#sisy-schedule-preview")[0]

    # Run it now: the worker runs it, the run shows on the task's page and in the run list.
    admin.button("Run now")
    assert "1 task(s) will run now." in admin.messages()
    wait_until(lambda: task.runs.filter(status="succeeded").exists(), timeout=WAIT)
    admin.open(f"/admin/sisy/task/{task.pk}/change/")
    admin.wait_for_text("#runs-group", "succeeded")
    screenshot("task-change-form")
    admin.open(f"/admin/sisy/taskrun/?task__id__exact={task.pk}")
    assert "succeeded" in admin.texts("#result_list tbody tr")[0]

    # Pause it: the button says so, the list shows it paused.
    admin.open(f"/admin/sisy/task/{task.pk}/change/")
    admin.button("Pause")
    assert any(m.startswith("1 task(s) paused") for m in admin.messages()), admin.messages()
    assert not Task.objects.get(pk=task.pk).enabled

    # A task whose function a deploy removed breaks; another one fails.
    broken = task_with_callable(jobs.record, label="invoice sync", schedule="0 6 * * *")
    broken.save()
    gone = {"func_type": "function", "func_path": "tests.testapp.jobs.removed_by_a_deploy"}
    Task.objects.filter(pk=broken.pk).update(callable_info=gone)
    failing = task_with_callable(jobs.fail, label="export to the warehouse", schedule="0 * * * *")
    failing.save()
    task_with_callable(jobs.record, label="heartbeat", schedule="* * * * * */10").save()
    Task.run_once(jobs.record)  # finishes once it ran
    for each in (broken, failing):
        each.run_asap()
    wait_until(
        lambda: (
            Task.objects.get(pk=broken.pk).broken
            and TaskRun.objects.filter(task=failing, status="failed").exists()
            and TaskRun.objects.filter(task__label="heartbeat", status="succeeded").exists()
            and Task.objects.filter(iterations=1).get().finished
        ),
        timeout=WAIT,
    )

    admin.open("/admin/sisy/task/")
    assert "Times are in Europe/Paris" in admin.texts(".sisy-note")[0]
    row = admin.row("invoice sync")
    assert "broken" in row and "removed_by_a_deploy" in row, row
    assert "failing" in admin.row("export to the warehouse")
    assert "paused" in admin.row("nightly report")
    assert "finished" in admin.row("tests.testapp.jobs.record")
    screenshot("task-list")
    assert admin.fits(), "the task list is wider than the window"

    # The failed run's page: titled with the run, its traceback as written.
    run = TaskRun.objects.get(task=failing, status="failed")
    admin.open(f"/admin/sisy/taskrun/{run.pk}/change/")
    assert admin.texts("#content h1") == [
        f"Run {run.pk} of task {failing.pk}: export to the warehouse"
    ]
    (traceback,) = admin.texts(".field-traceback_display pre")
    assert "Traceback (most recent call last)" in traceback
    assert "RuntimeError: boom from the test callable" in traceback
    screenshot("failed-run")
    admin.open("/admin/sisy/taskrun/")
    assert "failed" in " ".join(admin.texts("#result_list .field-status_display"))
    screenshot("run-list")
    assert admin.fits(), "the run list is wider than the window"
