"""The app in a real browser: Debian's Chromium, driven by Playwright, against `streamlit run`.

The server starts on a free port with $MRL_STORE holding a copy of the seeded store (a real evaluation and
benchmark of generated embeddings), so its first screen needs no encoding. Every page is screenshotted at
1280x800 into artifacts/screenshots/.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from playwright.sync_api import expect

from conftest import synthetic_embeddings_zip
from mrl_core.planner import WidthPlanner
from mrl_core.store import ResultStore

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = ROOT / "artifacts" / "screenshots"
VIEWPORT = {"width": 1280, "height": 800}
SERVER_START_TIMEOUT_S = 90
# Pages run mrl_core jobs (evaluation, funnel tuning) on a shared 2-core machine.
JOB_TIMEOUT_MS = 240_000
PAGE_TIMEOUT_MS = 90_000
# Latency on a shared CPU is noisy; the target test is about quality and storage, so latency gets slack.
SLACK_P95_MS = 10_000.0
STORE_PATHS: dict[str, Path] = {}
"""The store file behind each running server's URL."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_healthy(url: str, process: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"streamlit exited with {process.returncode}:\n{log_path.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.read().decode().strip() == "ok":
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"streamlit did not answer within {SERVER_START_TIMEOUT_S} s:\n{log_path.read_text()}")


@pytest.fixture(scope="module")
def app_url(tmp_path_factory, seeded_store_file):
    """`streamlit run app/streamlit_app.py` on a free port over a copy of the seeded store; stopped at the end."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent (apt-get install chromium)")
    folder = tmp_path_factory.mktemp("browser")
    shutil.copyfile(seeded_store_file, folder / "results.duckdb")
    env = dict(
        os.environ, MRL_STORE=str(folder / "results.duckdb"), MRL_CACHE_DIR=str(folder / "cache"), HF_HUB_OFFLINE="1"
    )
    port = free_port()
    log_path = folder / "streamlit.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "streamlit", "run", str(ROOT / "app" / "streamlit_app.py"),
                "--server.port", str(port), "--server.headless", "true",
            ],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    STORE_PATHS[url] = folder / "results.duckdb"
    try:
        wait_until_healthy(url, process, log_path)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run",
            ],
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport=VIEWPORT)
    tab = context.new_page()
    tab.set_default_timeout(PAGE_TIMEOUT_MS)
    try:
        yield tab
    finally:
        context.close()


def screenshot(page, name: str) -> None:
    """Save what a user sees at 1280x800, and the whole page for review."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    wait_for_idle(page)
    wait_for_charts(page)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))
    # Streamlit scrolls inside its own container, so a tall window shows the rest of the page.
    page.set_viewport_size({"width": VIEWPORT["width"], "height": 3200})
    wait_for_charts(page)
    page.screenshot(path=str(SCREENSHOTS / f"{name}_full.png"), full_page=True)
    page.set_viewport_size(VIEWPORT)


def wait_for_charts(page) -> None:
    """Wait until every Plotly chart on screen has drawn (Streamlit loads Plotly lazily)."""
    page.wait_for_function(
        """() => [...document.querySelectorAll('[data-testid="stPlotlyChart"]')]
                 .filter(chart => chart.offsetParent !== null)
                 .every(chart => chart.querySelector('.main-svg'))""",
        timeout=PAGE_TIMEOUT_MS,
    )
    page.wait_for_timeout(500)  # the chart's own transition


def wait_for_idle(page) -> None:
    """Wait until Streamlit has no script run in flight and every element has replaced its loading skeleton."""
    page.wait_for_function(
        """() => {
            const app = document.querySelector('[data-testid="stApp"]');
            return app && app.getAttribute('data-test-script-state') === 'notRunning'
                && !document.querySelector('[data-testid="stSkeleton"]');
        }""",
        timeout=JOB_TIMEOUT_MS,
    )


def headline(page) -> str:
    text = page.get_by_text(re.compile(r"^Recommended: ")).first.inner_text()
    return text.removeprefix("Recommended: ")


def set_number(page, label: str, value: str) -> None:
    field = page.get_by_label(label, exact=True)
    field.fill(value)
    field.press("Enter")
    wait_for_idle(page)


def upload(page, path: Path) -> None:
    page.get_by_text("Upload a file", exact=True).click()
    page.locator("input[type=file]").set_input_files(str(path))
    wait_for_idle(page)


def test_the_app_opens_on_the_planner_with_a_recommendation(app_url, page):
    page.goto(app_url)
    page.get_by_role("heading", name="Plan capacity").wait_for()
    page.get_by_text(re.compile(r"^Recommended: ")).wait_for()
    wait_for_idle(page)
    assert page.get_by_test_id("stMetricValue").count() == 4
    screenshot(page, "planner")
    for tab, name in (("Quality vs width", "planner_curves"), ("Growth with corpus size", "planner_growth"),
                      ("Export", "planner_export")):
        page.get_by_role("tab", name=tab).click()
        page.get_by_role("tabpanel", name=tab).scroll_into_view_if_needed()
        screenshot(page, name)
    page.get_by_role("button", name="FAISS factory string").wait_for()


def expected_storage_text(store_path: Path, *, retention_pct: float, storage_gb: float = 1.0) -> str:
    """The Storage metric the planner's pick should show at the app's default corpus size (1M)."""
    chosen = WidthPlanner(
        1_000_000, max_storage_gb=storage_gb, max_p95_ms=SLACK_P95_MS, min_retention=retention_pct / 100
    ).fit(ResultStore(store_path)).recommendation_
    return f"{chosen['storage_gb']:.3g} GB"


def storage_metric(page):
    return page.get_by_test_id("stMetric").filter(has_text="Storage").get_by_test_id("stMetricValue")


def test_changing_targets_changes_the_recommendation(app_url, page):
    page.goto(app_url)
    page.get_by_text(re.compile(r"^Recommended: ")).wait_for()
    wait_for_idle(page)
    set_number(page, "p95 latency (ms)", f"{SLACK_P95_MS:g}")
    set_number(page, "Keep at least (%)", "50")
    loose_storage = expected_storage_text(STORE_PATHS[app_url], retention_pct=50)
    expect(storage_metric(page)).to_have_text(loose_storage, timeout=JOB_TIMEOUT_MS)
    loose = headline(page)
    set_number(page, "Keep at least (%)", "99")
    strict_storage = expected_storage_text(STORE_PATHS[app_url], retention_pct=99)
    assert strict_storage != loose_storage
    expect(storage_metric(page)).to_have_text(strict_storage, timeout=JOB_TIMEOUT_MS)
    assert headline(page) != loose
    set_number(page, "Storage budget (GB, all replicas)", "0.001")
    page.get_by_text("No configuration meets every target.").wait_for()
    screenshot(page, "planner_nothing_fits")


def test_uploading_embeddings_on_evaluate_produces_results(app_url, page, tmp_path):
    vectors = tmp_path / "vectors.zip"
    vectors.write_bytes(synthetic_embeddings_zip(seed=2))
    page.goto(f"{app_url}/evaluate")
    page.get_by_role("heading", name="Evaluate widths on your data").wait_for()
    wait_for_idle(page)
    upload(page, vectors)
    page.get_by_text("(precomputed embeddings, 64 dims)").wait_for()
    page.get_by_role("button", name="Run evaluation").click()
    run_heading = page.get_by_role("heading", name=re.compile(r"^Run #\d+ · vectors · precomputed"))
    run_heading.wait_for(timeout=JOB_TIMEOUT_MS)
    wait_for_idle(page)
    page.get_by_test_id("stPlotlyChart").first.wait_for()
    screenshot(page, "evaluate")


def test_a_malformed_upload_shows_a_clear_error(app_url, page, tmp_path):
    broken = tmp_path / "broken.zip"
    broken.write_bytes(b"this is not a zip archive")
    page.goto(f"{app_url}/evaluate")
    page.get_by_role("heading", name="Evaluate widths on your data").wait_for()
    wait_for_idle(page)
    upload(page, broken)
    error = page.get_by_test_id("stAlertContentError")
    error.wait_for()
    assert "broken.zip" in error.inner_text()
    assert page.get_by_test_id("stException").count() == 0
    screenshot(page, "evaluate_error")


def test_a_funnel_query_returns_results(app_url, page, tmp_path):
    vectors = tmp_path / "vectors.zip"
    vectors.write_bytes(synthetic_embeddings_zip())
    page.goto(f"{app_url}/funnel")
    page.get_by_role("heading", name="Funnel: adaptive retrieval, live").wait_for()
    wait_for_idle(page)
    upload(page, vectors)
    page.get_by_role("button", name="Tune the funnel").click()
    page.get_by_text("Tuned funnel").wait_for(timeout=JOB_TIMEOUT_MS)
    wait_for_idle(page)
    # The funnel's and exact search's result tables (after the tuner's table in its expander).
    page.get_by_test_id("stDataFrame").nth(2).wait_for()
    speedup = page.get_by_test_id("stMetric").filter(has_text="Speedup").get_by_test_id("stMetricValue").inner_text()
    assert re.fullmatch(r"\d+\.\d\d×", speedup), speedup
    screenshot(page, "funnel")


@pytest.mark.parametrize("path, heading", [("runs", "Runs"), ("train", "Train a Matryoshka model")])
def test_the_other_pages_render(app_url, page, path, heading):
    page.goto(f"{app_url}/{path}")
    page.get_by_role("heading", name=heading).wait_for()
    wait_for_idle(page)
    assert page.get_by_test_id("stException").count() == 0
    screenshot(page, path)
