"""The console in a real headless Chromium (Debian's ``chromium`` and ``chromedriver``, driven
by selenium) against a seeded stack served by uvicorn, as ``fleetpulse api run`` serves it.

Every scenario ends with no error in the browser's console; screenshots go to
``$FLEETPULSE_TEST_ARTIFACTS`` (default ``.artifacts/console`` in the repo)."""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from fleetpulse import AgentPausedError, Fleet
from fleetpulse.control.access import Caller
from fleetpulse.control.gateway import LocalGateway
from fleetpulse.devstack import free_port

from .console_support import ConsoleStack, console_stack
from .helpers import wait_for

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = [
    pytest.mark.integration,
    pytest.mark.browser,
    pytest.mark.skipif(
        CHROMIUM is None or DRIVER is None,
        reason="needs Debian's chromium and chromium-driver (apt-get install -y chromium "
        "chromium-driver; .ci/run installs them)",
    ),
]
ARTIFACTS = Path(
    os.environ.get("FLEETPULSE_TEST_ARTIFACTS", Path(__file__).parents[2] / ".artifacts")
) / "console"  # fmt: skip


class Served:
    def __init__(self, stack: ConsoleStack) -> None:
        self.port = free_port()
        config = uvicorn.Config(
            stack.app, host="127.0.0.1", port=self.port, log_level="warning",
            timeout_graceful_shutdown=1,
        )  # fmt: skip
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Served:
        self.thread.start()
        wait_for(lambda: self.server.started, "uvicorn serves the console", timeout=20)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def stack(kafka, tmp_path_factory) -> Iterator[ConsoleStack]:
    with console_stack(kafka.bootstrap_servers, tmp_path_factory.mktemp("console-b")) as s:
        yield s


@pytest.fixture(scope="module")
def served(stack: ConsoleStack) -> Iterator[Served]:
    with Served(stack) as s:
        yield s


@pytest.fixture
def browser(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1400,1000",
                 f"--user-data-dir={tmp_path / 'chromium'}"):  # fmt: skip
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(str(DRIVER)))
    driver.set_page_load_timeout(30)
    try:
        yield driver
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, f"browser console errors: {errors}"
    finally:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(ARTIFACTS / f"{request.node.name}-end.png"))
        driver.quit()


def sign_in(
    driver: Any, served: Served, stack: ConsoleStack, role: str, path: str = "/ui/"
) -> None:
    from selenium.webdriver.common.by import By

    driver.get(served.url + path)
    assert "/ui/login" in driver.current_url  # not signed in yet: sent to the sign-in page
    driver.find_element(By.ID, "token").send_keys(stack.tokens[role])
    driver.find_element(By.ID, "sign-in").click()
    wait_for(lambda: "/ui/login" not in driver.current_url, f"{role} is signed in", timeout=10)
    wait_for(
        lambda: driver.execute_script("return document.readyState") == "complete",
        "the page is loaded", timeout=10,
    )  # fmt: skip
    assert stack.tokens[role] not in driver.page_source


def shot(driver: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def text_of(driver: Any, element_id: str) -> str:
    """An element's text, or "" while a live update is swapping it (a stale reference)."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

    try:
        return str(driver.find_element("id", element_id).text)
    except (StaleElementReferenceException, NoSuchElementException):
        return ""


def live(driver: Any) -> None:
    """Wait until the page's event stream is open."""
    wait_for(
        lambda: "on" in (driver.find_element("id", "live-dot").get_attribute("class") or ""),
        "the live stream is open", timeout=10,
    )  # fmt: skip


def test_sign_in_and_the_overview_draws_the_seeded_figures(browser, served, stack) -> None:
    from selenium.webdriver.common.by import By

    sign_in(browser, served, stack, "operations", "/ui/?range=1h")
    wait_for(
        lambda: len(browser.find_elements(By.CSS_SELECTOR, "svg.plot")) == 4,
        "the overview's four plots", timeout=10,
    )  # fmt: skip
    lines = browser.find_elements(By.CSS_SELECTOR, "svg.plot polyline.series")
    assert len(lines) >= 6  # tasks, failure rate, p50/p95/p99, cost
    width = browser.execute_script(
        "return document.querySelector('svg.plot polyline.series').getBBox().width"
    )
    assert width > 300  # a line across the hour, not a dot
    wait_for(lambda: text_of(browser, "health-failing") == "1", "one agent failing", timeout=10)
    shot(browser, "overview")
    browser.get(served.url + "/ui/agents/triage?range=24h")
    assert browser.find_element(By.ID, "releases").text.count("v") >= 2
    shot(browser, "agent")


def test_a_breaker_forced_open_appears_within_2s_without_reload(browser, served, stack) -> None:
    from selenium.webdriver.common.by import By

    sign_in(browser, served, stack, "operations", "/ui/breakers")
    live(browser)
    browser.execute_script("window.__sameDocument = true")
    engineer = LocalGateway(stack.plane, Caller("p-engineering", "engineering"), lambda q: [])
    engineer.set_breaker("integration:zendesk", "force_open", "vendor incident")
    t0 = time.monotonic()

    def shown() -> bool:
        rows = browser.find_elements(By.CSS_SELECTOR, 'tr[data-breaker="integration:zendesk"]')
        return bool(rows) and "FORCED_OPEN" in rows[0].text

    wait_for(shown, "the forced-open breaker shows on the open page", timeout=2.0)
    took = time.monotonic() - t0
    assert browser.execute_script("return window.__sameDocument") is True  # no reload
    assert browser.find_element(By.CSS_SELECTOR, '[data-count="open_breakers"]').text == "1"
    shot(browser, "breaker-live")
    print(f"breaker change to screen: {took:.2f}s")
    engineer.set_breaker("integration:zendesk", "reset", "over")


def test_operations_pauses_an_agent_by_clicking_and_the_sdk_refuses(
    browser, served, stack, tmp_path
) -> None:
    from selenium.webdriver.common.by import By

    with Fleet.connect(
        "refunds", bootstrap_servers=stack.bootstrap, topic_prefix=stack.topics.prefix,
        spool_dir=tmp_path / "spool",
    ) as fleet:  # fmt: skip
        with fleet.task("refund", input={"n": 1}):
            pass  # runs while the agent is not paused
        sign_in(browser, served, stack, "operations", "/ui/agents/refunds")
        browser.find_element(By.ID, "pause-reason").send_keys("refunds look wrong")
        browser.find_element(By.ID, "pause-button").click()
        wait_for(
            lambda: text_of(browser, "pause-state") == "PAUSED",
            "the page shows the agent paused", timeout=10,
        )  # fmt: skip
        shot(browser, "paused")

        def refused() -> bool:
            try:
                with fleet.task("refund", input={"n": 2}):
                    return False
            except AgentPausedError:
                return True

        wait_for(refused, "the SDK refuses the paused agent's next task", timeout=10)
    audit = stack.audit_rows("p-operations")
    assert [e["action"] for e in audit if e.get("agent_id") == "refunds"][-1] == "paused"
    LocalGateway(stack.plane, Caller("p-operations", "operations"), lambda q: []).set_paused(
        "refunds", False, "test over"
    )


def test_compliance_sees_the_audit_answer_and_no_control(browser, served, stack) -> None:
    from selenium.webdriver.common.by import By

    since = stack.now.strftime("%Y-%m-%dT00:00")
    sign_in(browser, served, stack, "compliance",
            f"/ui/audit?agent=triage&target=customer%2F3&since={since}")  # fmt: skip
    calls = browser.find_element(By.ID, "audit-calls").text
    assert "zendesk.update" in calls and "crm.lookup" in calls
    actions = browser.find_element(By.ID, "audit-actions").text
    assert "activated" in actions
    forms = browser.find_elements(By.CSS_SELECTOR, 'form[method="post"]')
    assert [f.get_attribute("action").rsplit("/", 1)[-1] for f in forms] == ["logout"]
    shot(browser, "audit")
    for page in ("/ui/", "/ui/agents/triage", "/ui/breakers", "/ui/alerts", "/ui/approvals"):
        browser.get(served.url + page)
        posts = browser.find_elements(By.CSS_SELECTOR, 'form[method="post"]')
        assert len(posts) == 1, f"{page}: a control shown to compliance"


def test_an_approver_approves_and_the_blocked_sdk_task_proceeds(
    browser, served, stack, tmp_path
) -> None:
    from selenium.webdriver.common.by import By

    sign_in(browser, served, stack, "approver", "/ui/approvals")
    live(browser)
    outcome: dict[str, Any] = {}

    def agent() -> None:
        with Fleet.connect(
            "triage", bootstrap_servers=stack.bootstrap, topic_prefix=stack.topics.prefix,
            spool_dir=tmp_path / "spool",
        ) as fleet:  # fmt: skip
            with fleet.task("refund", input={"ticket": 42}) as task:
                a = task.require_approval("stripe.refund", summary="refund order 42", timeout=60)
                outcome["by"] = a.decided_by
            outcome["outcome"] = task.event["outcome"] if task.event else None

    thread = threading.Thread(target=agent, daemon=True)
    thread.start()
    wait_for(
        lambda: any("refund order 42" in r.text
                    for r in browser.find_elements(By.CSS_SELECTOR, "tr[data-approval]")),
        "the request appears on the open page", timeout=15,
    )  # fmt: skip
    shot(browser, "approval-pending")
    for r in browser.find_elements(By.CSS_SELECTOR, "tr[data-approval]"):
        if "refund order 42" in r.text:
            r.find_element(By.CSS_SELECTOR, ".approve-button").click()
            break
    thread.join(30)
    assert outcome == {"by": "p-approver", "outcome": "success"}
    wait_for(lambda: "approved" in browser.find_element(By.ID, "approvals-history").text,
             "the decision is in the history", timeout=10)  # fmt: skip
    shot(browser, "approval-decided")
