"""The app in a real browser: Debian's Chromium, driven by Playwright, against `streamlit run`.

The server starts on a free port with $MRL_STORE holding a copy of the seeded store (a real evaluation and
benchmark of generated embeddings), so its first screen needs no encoding. Every page is screenshotted at
1280x800 into artifacts/screenshots/. Long work runs as background jobs that the sidebar's jobs panel follows;
the tests start one from a page, one from the library (and cancel it from the panel), and check the sign-in gate.
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
from datetime import datetime
from pathlib import Path

import psutil
import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError
from playwright.sync_api import expect

from conftest import matryoshka_like_folder, synthetic_embeddings_zip
from mrl_core.cli import submit_job
from mrl_core.jobs import cancel
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
# An adaptor on the built-in quick data encodes it with the base model first (about two minutes here, cold cache).
TRAIN_TIMEOUT_MS = 300_000
TRAIN_EPOCHS = 30
# The panel polls every 2 s; a job shows up, moves and ends within a few polls.
PANEL_TIMEOUT_MS = 30_000
# A selectbox's open list closes when the page reruns under it (seen after another test's job ended): reopen it.
CHOOSE_ATTEMPTS = 4
CHOOSE_TIMEOUT_MS = 15_000
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


def serve(folder: Path, *extra_arguments: str):
    """Start `streamlit run app/streamlit_app.py` on a free port with its store and cache in ``folder``; return
    (url, process, log path)."""
    env = dict(
        os.environ, MRL_STORE=str(folder / "results.duckdb"), MRL_CACHE_DIR=str(folder / "cache"), HF_HUB_OFFLINE="1"
    )
    port = free_port()
    log_path = folder / "streamlit.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "streamlit", "run", str(ROOT / "app" / "streamlit_app.py"),
                "--server.port", str(port), "--server.headless", "true", *extra_arguments,
            ],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
    return f"http://127.0.0.1:{port}", process, log_path


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def app_url(tmp_path_factory, seeded_store_file):
    """`streamlit run app/streamlit_app.py` on a free port over a copy of the seeded store; stopped at the end."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent (apt-get install chromium)")
    folder = tmp_path_factory.mktemp("browser")
    shutil.copyfile(seeded_store_file, folder / "results.duckdb")
    url, process, log_path = serve(folder)
    STORE_PATHS[url] = folder / "results.duckdb"
    try:
        wait_until_healthy(url, process, log_path)
        yield url
    finally:
        stop(process)
        # Jobs run in their own sessions and outlive the server; stop any a failed test left behind.
        store = ResultStore(STORE_PATHS[url])
        for job_id in store.jobs(statuses=("queued", "running"))["job_id"]:
            cancel(store, int(job_id), grace_s=2)


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


def clear_the_job_queue(store_path: Path) -> None:
    """Cancel the jobs already queued or running on the server's store.

    Opening the Planner on the seeded store (the tests above do) starts its first start, a job of about ten
    minutes that holds the one job slot of a 2-core machine: a job the next test starts would wait behind it.
    """
    store = ResultStore(store_path)
    for job_id in store.jobs(statuses=("queued", "running"))["job_id"]:
        cancel(store, int(job_id), grace_s=2)


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
    clear_the_job_queue(STORE_PATHS[app_url])
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
    clear_the_job_queue(STORE_PATHS[app_url])
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
    speedup = live_speedup(page)
    assert re.fullmatch(r"\d+\.\d\d×", speedup), speedup
    screenshot(page, "funnel")


def live_speedup(page) -> str:
    """The live query's speedup metric (not the tuned funnel's speedup on unseen queries)."""
    metric = page.get_by_test_id("stMetric").filter(has=page.get_by_text("Speedup", exact=True))
    return metric.get_by_test_id("stMetricValue").inner_text()


def test_the_funnel_page_opens_on_the_large_builtin_set_and_an_example_chip_searches(
    tmp_path, page, monkeypatch, seeded_store_file
):
    """A miniature of builtin:large, encoded and tuned in the server's cache and store: the page picks it."""
    from mrl_core.builtin.gcide import EXAMPLE_QUERIES, write_cache
    from mrl_core.cli import main
    from tests.fixtures_data import large_miniature_entries

    shutil.copyfile(seeded_store_file, tmp_path / "results.duckdb")
    monkeypatch.setenv("MRL_STORE", str(tmp_path / "results.duckdb"))
    monkeypatch.setenv("MRL_CACHE_DIR", str(tmp_path / "cache"))
    write_cache(large_miniature_entries())
    assert main(["funnel", "--data", "builtin:large", "--model", "base"]) == 0
    url, process, log_path = serve(tmp_path)
    try:
        wait_until_healthy(url, process, log_path)
        page.goto(f"{url}/funnel")
        page.get_by_role("heading", name="Funnel: adaptive retrieval, live").wait_for()
        wait_for_idle(page)
        page.get_by_text("builtin:large: 405 documents").wait_for(timeout=PAGE_TIMEOUT_MS)
        # The first example is the query the page opens with; the second is clicked.
        query, target = list(EXAMPLE_QUERIES.items())[1]
        page.get_by_test_id("stButtonGroup").filter(has_text="Examples").get_by_text(query, exact=True).click()
        expect(page.get_by_label("Query")).to_have_value(query, timeout=PAGE_TIMEOUT_MS)
        wait_for_idle(page)
        tables = page.get_by_test_id("stDataFrame")
        expect(tables.nth(tables.count() - 1)).to_contain_text(target, timeout=PAGE_TIMEOUT_MS)
        expect(tables.nth(tables.count() - 2)).to_contain_text(target)
        assert re.fullmatch(r"\d+\.\d\d×", live_speedup(page))
        assert page.get_by_test_id("stException").count() == 0
        screenshot(page, "funnel_large")
    finally:
        stop(process)


@pytest.mark.parametrize("path, heading", [("runs", "Runs"), ("train", "Train a Matryoshka model")])
def test_the_other_pages_render(app_url, page, path, heading):
    page.goto(f"{app_url}/{path}")
    # The page title; the Runs page also has a 'Runs' section.
    page.get_by_role("heading", name=heading, exact=True, level=1).wait_for()
    wait_for_idle(page)
    assert page.get_by_test_id("stException").count() == 0
    screenshot(page, path)


def sidebar(page):
    return page.get_by_test_id("stSidebar")


def job_card_of(page, cancel_label: str):
    """The panel's box around one job: the innermost block holding its Cancel button."""
    # `has` matches inside each block, so the button's locator must not start from the sidebar.
    button = page.get_by_role("button", name=cancel_label)
    return sidebar(page).get_by_test_id("stVerticalBlock").filter(has=button).last


def reuse_base_embeddings(cache: Path) -> None:
    """Copy this machine's cached base-model embeddings into the server's cache, when there are any.

    The cache is keyed by model and text, so a copy only saves the minutes of encoding the built-in data; without
    one the training job encodes it first (and takes that much longer).
    """
    from mrl_core.models import model_fingerprint

    fingerprint = model_fingerprint("base")
    mine = Path.home() / ".cache" / "mrl_core" / "embeddings" / fingerprint
    if mine.is_dir():
        shutil.copytree(mine, cache / "embeddings" / fingerprint, dirs_exist_ok=True)


def test_training_runs_as_a_job_that_the_sidebar_follows_across_pages(app_url, page):
    clear_the_job_queue(STORE_PATHS[app_url])
    reuse_base_embeddings(STORE_PATHS[app_url].parent / "cache")
    page.goto(f"{app_url}/train")
    page.get_by_role("heading", name="Train a Matryoshka model").wait_for()
    wait_for_idle(page)
    # The built-in quick data is the default source.
    page.get_by_role("radio", name="Adaptor on frozen embeddings").click()
    # The adaptor's fields (Streamlit marks each keyed widget with an st-key-<key> class) replace the full
    # fine-tune's once the page has rerun.
    expect(page.locator(".st-key-train_out_full")).to_have_count(0, timeout=PAGE_TIMEOUT_MS)
    epochs = page.locator(".st-key-train_epochs_adaptor input")
    # About a second an epoch: long enough for the panel to show the training phase move.
    epochs.fill(str(TRAIN_EPOCHS))
    epochs.press("Enter")
    expect(epochs).to_have_value(str(TRAIN_EPOCHS))
    wait_for_idle(page)
    # The button's icon (model_training) is part of its accessible name.
    page.get_by_role("button", name=re.compile(r"(^|\s)Train$")).click()
    # The click only submits the job: the panel lists it within a poll or two, long before training ends.
    cancel_button = sidebar(page).get_by_role("button", name=re.compile(r"Cancel job #\d+"))
    cancel_button.wait_for(timeout=PANEL_TIMEOUT_MS)
    job_label = re.search(r"#\d+", cancel_button.inner_text()).group()
    job_card = job_card_of(page, f"Cancel job {job_label}")
    expect(job_card).to_contain_text(re.compile("adaptor", re.IGNORECASE))

    # Leaving the page does not stop the job; coming back finds it still followed by the panel.
    sidebar(page).get_by_role("link", name="Runs", exact=True).click()
    page.get_by_role("heading", name="Runs", exact=True, level=1).wait_for()
    expect(page.get_by_test_id("stDataFrame").first).to_be_visible(timeout=PAGE_TIMEOUT_MS)
    sidebar(page).get_by_role("link", name="Train", exact=True).click()
    page.get_by_role("heading", name="Train a Matryoshka model").wait_for()
    progress = sidebar(page).get_by_test_id("stProgress")
    expect(progress.first).to_be_visible(timeout=PANEL_TIMEOUT_MS)
    # Progressing: the job reports its epochs as they end.
    expect(sidebar(page)).to_contain_text(re.compile(rf"training: \d+/{TRAIN_EPOCHS}"), timeout=TRAIN_TIMEOUT_MS)
    screenshot(page, "jobs_panel_training")

    # When it ends, the panel reruns the page, which draws the new run without a click.
    page.get_by_role("heading", name=re.compile(r"Held-out quality before and after training")).wait_for(
        timeout=TRAIN_TIMEOUT_MS
    )
    expect(sidebar(page).get_by_text(re.compile(rf"finished\s*{job_label}\b"))).to_be_visible(
        timeout=PANEL_TIMEOUT_MS
    )
    wait_for_idle(page)
    screenshot(page, "train_after_job")


def test_a_job_is_cancelled_from_the_sidebar(app_url, page, tmp_path, monkeypatch):
    store_path = STORE_PATHS[app_url]
    clear_the_job_queue(store_path)
    vectors = tmp_path / "vectors"
    matryoshka_like_folder(vectors)
    # The job writes its cache where the server's jobs do.
    monkeypatch.setenv("MRL_CACHE_DIR", str(store_path.parent / "cache"))
    # Timing a 1M-row enlargement takes minutes here: long enough to be cancelled mid-way.
    job_id = submit_job(
        ["bench", "--data", str(vectors), "--model", "precomputed", "--corpus-sizes", "1000000",
         "--store", str(store_path)],
        submitted_by="browser test",
    )
    try:
        page.goto(f"{app_url}/runs")
        page.get_by_role("heading", name="Runs", exact=True, level=1).wait_for()
        cancel_button = sidebar(page).get_by_role("button", name=f"Cancel job #{job_id}")
        cancel_button.wait_for(timeout=PANEL_TIMEOUT_MS)
        job_card = job_card_of(page, f"Cancel job #{job_id}")
        expect(job_card).to_contain_text("running", timeout=PANEL_TIMEOUT_MS)
        expect(job_card).to_contain_text("by browser test")
        screenshot(page, "jobs_panel_running")

        cancel_button.click()
        expect(sidebar(page).get_by_text(re.compile(rf"cancelled\s*#{job_id} bench"))).to_be_visible(
            timeout=PANEL_TIMEOUT_MS
        )
        expect(cancel_button).to_have_count(0)
        job = ResultStore(store_path).get_job(job_id)
        assert job["status"] == "cancelled"
        runs = ResultStore(store_path).list_runs()
        assert set(runs.loc[runs["job_id"] == job_id, "status"]) <= {"cancelled"}

        # The Runs page holds the job in its history, with the runs it stored.
        page.reload()
        page.get_by_role("heading", name="Runs", exact=True, level=1).wait_for()
        jobs_table = page.get_by_test_id("stDataFrame").first
        expect(jobs_table).to_contain_text("cancelled", timeout=PAGE_TIMEOUT_MS)
        screenshot(page, "runs_history")
    finally:
        cancel(ResultStore(store_path), job_id, grace_s=2)


def choose(page, label: str, option: str) -> None:
    """Pick ``option`` in the selectbox labelled ``label``; a rerun that closes the open list reopens it."""
    box = page.get_by_test_id("stSelectbox").filter(has_text=label)
    for _ in range(CHOOSE_ATTEMPTS):
        box.click()
        try:
            page.get_by_role("option", name=option).click(timeout=CHOOSE_TIMEOUT_MS)
            break
        except PlaywrightTimeoutError:
            page.keyboard.press("Escape")
            wait_for_idle(page)
    else:
        raise AssertionError(f"{label}: option {option!r} never showed in {CHOOSE_ATTEMPTS} attempts")
    wait_for_idle(page)


def test_deleting_a_run_asks_first_and_a_running_jobs_run_stays(app_url, page):
    store = ResultStore(STORE_PATHS[app_url])
    with store.run("evaluate", model="precomputed", dataset="doomed", dataset_fingerprint="doomed") as doomed:
        store.add_rows("results", doomed, [{"method": "prefix", "width": 8, "precision": "fp32", "ndcg_at_10": 0.5}])
    # A job that is still going (a stand-in process) and the run it is writing.
    stand_in = subprocess.Popen(["sleep", "600"], start_new_session=True)
    job_id = store.add_job("evaluate", ["--data", "busy"], label="evaluate busy", submitted_by="browser test")
    store.update_job(
        job_id, status="running", started_at=datetime.now(), pid=stand_in.pid,
        pid_started=psutil.Process(stand_in.pid).create_time(),
    )
    busy = ResultStore(store.path, job_id=job_id).start_run("evaluate", model="precomputed", dataset="busy")
    try:
        page.goto(f"{app_url}/runs")
        page.get_by_role("heading", name="Delete a run").wait_for()
        wait_for_idle(page)
        delete_button = page.get_by_role("button", name="Delete run…")
        choose(page, "Run to delete", f"#{busy} evaluate · precomputed · busy (running)")
        expect(delete_button).to_be_disabled()
        expect(page.get_by_text(f"Run #{busy} belongs to job #{job_id}, which is still going")).to_be_visible()

        choose(page, "Run to delete", f"#{doomed} evaluate · precomputed · doomed (finished)")
        delete_button.click()
        dialog = page.get_by_role("dialog")
        expect(dialog).to_contain_text(f"#{doomed} evaluate · precomputed · doomed")
        screenshot(page, "runs_delete_confirm")
        dialog.get_by_role("button", name="Keep").click()
        expect(dialog).to_have_count(0)
        assert doomed in set(store.list_runs()["run_id"])

        delete_button.click()
        dialog.get_by_role("button", name=re.compile(r"Delete$")).click()
        expect(dialog).to_have_count(0)
        assert doomed not in set(store.list_runs()["run_id"])
    finally:
        cancel(store, job_id, grace_s=2)
        stand_in.wait()


def test_with_auth_configured_the_app_asks_to_sign_in_first(tmp_path, page):
    server_folder = tmp_path / "server"
    server_folder.mkdir()
    secrets = tmp_path / "secrets.toml"
    # An OpenID Connect provider that is never contacted: the test stops at the sign-in screen.
    secrets.write_text(
        "[auth]\n"
        'redirect_uri = "http://localhost:8501/oauth2callback"\n'
        'cookie_secret = "browser-test-cookie-secret-0123456789abcdef"\n'
        'client_id = "browser-test"\n'
        'client_secret = "browser-test-secret"\n'
        'server_metadata_url = "http://127.0.0.1:9/.well-known/openid-configuration"\n'
    )
    url, process, log_path = serve(server_folder, "--secrets.files", str(secrets))
    try:
        wait_until_healthy(url, process, log_path)
        for path in ("", "/runs"):
            page.goto(f"{url}{path}")
            page.get_by_role("button", name="Log in").wait_for()
            wait_for_idle(page)
            assert page.get_by_role("heading", name="Plan capacity").count() == 0
            assert page.get_by_role("heading", name="Runs", exact=True, level=1).count() == 0
            assert page.get_by_test_id("stSidebar").count() == 0
        screenshot(page, "sign_in")
    finally:
        stop(process)
