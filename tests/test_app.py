"""Page logic of the Streamlit app, driven by Streamlit's AppTest on a store of real measured rows.

The store is seeded by ``seeded_store`` (conftest): an evaluation and a latency benchmark of a generated
precomputed-embedding dataset, so nothing is encoded here. A button that starts long work submits a real
background job (its own process, ``mrl_core.jobs``); a test waits for it to end and reruns the page.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from streamlit.testing.v1 import AppTest

from conftest import SYNTHETIC_BENCH_SIZES, synthetic_embeddings_zip
from mrl_core import first_start
from mrl_core.deployment import Machine, this_machine_cores
from mrl_core.jobs import log_tail
from mrl_core.planner import WidthPlanner
from mrl_core.store import ACTIVE_JOB_STATUSES

APP = str(Path(__file__).resolve().parents[1] / "app" / "streamlit_app.py")
TIMEOUT_S = 120
# Latency on a shared CPU is noisy; planner tests that are about storage or quality leave it slack.
SLACK_P95_MS = 10_000.0
# A job on the generated data takes seconds (3 s for an evaluation, most of it imports); a loaded machine more.
JOB_TIMEOUT_S = 180


@pytest.fixture(autouse=True)
def no_job_outlives_its_test(tmp_path):
    """Cancel what a test left queued or running in its store (``isolated_store``), passed or failed."""
    yield
    path = tmp_path / "results.duckdb"
    if path.exists():
        from mrl_core.jobs import cancel
        from mrl_core.store import ResultStore

        store = ResultStore(path)
        for job_id in store.jobs(statuses=ACTIVE_JOB_STATUSES)["job_id"]:
            cancel(store, int(job_id), grace_s=3.0)


@pytest.fixture
def seeded_store(seeded_store, monkeypatch):
    """The seeded store, whose benchmark sizes stand for the first start's: with the real ones (10k to 1M) the
    Planner would start a ten-minute first-start job under every test."""
    monkeypatch.setattr(first_start, "DATASET_BENCH_CORPUS_SIZES", SYNTHETIC_BENCH_SIZES)
    return seeded_store


def start(page: str | None = None, **state) -> AppTest:
    """The app after its first run, switched to ``page``; ``state`` presets widget values by key."""
    app = AppTest.from_file(APP, default_timeout=TIMEOUT_S)
    app.run()
    for key, value in state.items():
        app.session_state[key] = value
    if page is not None:
        app.switch_page(page)
        app.run()
    assert not app.exception, [exception.value for exception in app.exception]
    return app


def rerun(app: AppTest) -> AppTest:
    app.run()
    assert not app.exception, [exception.value for exception in app.exception]
    return app


def wait_for_job(store, status: str = "finished", timeout_s: float = JOB_TIMEOUT_S) -> dict:
    """The store's newest job once it has ended, which must be with ``status`` (else its error and log's tail)."""
    deadline = time.monotonic() + timeout_s
    while True:
        jobs = store.jobs()
        assert len(jobs), "no job was submitted"
        job = jobs.iloc[0].to_dict()
        if job["status"] not in ACTIVE_JOB_STATUSES:
            break
        assert time.monotonic() < deadline, (
            f"job {job['job_id']} still {job['status']} after {timeout_s} s:\n{log_tail(job)}"
        )
        time.sleep(0.25)
    assert job["status"] == status, f"job {job['job_id']} {job['status']}: {job['error']}\n{log_tail(job)}"
    return job


def click_and_wait(app: AppTest, key: str, store, status: str = "finished") -> tuple[AppTest, dict]:
    """Click a button that submits a job, wait for the job to end, and rerun the page to show what it stored."""
    jobs_before = len(store.jobs())
    app.button(key=key).click()
    rerun(app)
    assert len(store.jobs()) == jobs_before + 1, [error.value for error in app.error]
    job = wait_for_job(store, status)
    assert app.session_state["jobs_started"][-1] == job["job_id"]
    return rerun(app), job


def job_boxes(app: AppTest) -> list[str]:
    """The 'Title: running as job #N' lines of the job boxes on the page."""
    return [block.value for block in app.main.markdown if " as job #" in block.value]


def recommendation_headline(app: AppTest) -> str | None:
    headlines = [block.value for block in app.markdown if block.value.startswith("#### Recommended: ")]
    return headlines[0].removeprefix("#### Recommended: ") if headlines else None


def metric_value(app: AppTest, label: str) -> str:
    return next(metric.value for metric in app.metric if metric.label == label)


def set_targets(app: AppTest, *, storage_gb: float, retention_pct: float, corpus_size: int = 1_000_000) -> AppTest:
    app.select_slider(key="planner_corpus_size").set_value(corpus_size)
    app.number_input(key="planner_storage_gb").set_value(storage_gb)
    app.number_input(key="planner_p95_ms").set_value(SLACK_P95_MS)
    app.number_input(key="planner_floor_pct").set_value(retention_pct)
    return rerun(app)


def expected_recommendation(store, *, storage_gb: float, retention_pct: float, corpus_size: int = 1_000_000):
    planner = WidthPlanner(
        corpus_size, max_storage_gb=storage_gb, max_p95_ms=SLACK_P95_MS, min_retention=retention_pct / 100
    ).fit(store)
    return planner.recommendation_


def test_planner_opens_first_and_shows_the_planners_pick(seeded_store):
    app = set_targets(start(), storage_gb=1.0, retention_pct=50.0)
    assert app.title[0].value == "Plan capacity"
    expected = expected_recommendation(seeded_store, storage_gb=1.0, retention_pct=50.0)
    assert expected is not None
    assert metric_value(app, "Width") == f"{expected['width']} dims"
    assert metric_value(app, "Storage") == f"{expected['storage_gb']:.3g} GB"
    assert expected["precision"] in recommendation_headline(app)


def test_raising_the_quality_floor_changes_the_recommendation(seeded_store):
    app = set_targets(start(), storage_gb=1.0, retention_pct=50.0)
    loose_headline = recommendation_headline(app)
    app = set_targets(app, storage_gb=1.0, retention_pct=99.0)
    strict_headline = recommendation_headline(app)

    loose = expected_recommendation(seeded_store, storage_gb=1.0, retention_pct=50.0)
    strict = expected_recommendation(seeded_store, storage_gb=1.0, retention_pct=99.0)
    assert loose["storage_bytes"] < strict["storage_bytes"]
    assert loose_headline != strict_headline
    assert metric_value(app, "Storage") == f"{strict['storage_gb']:.3g} GB"


def test_a_budget_nothing_meets_shows_what_to_relax(seeded_store):
    app = set_targets(start(), storage_gb=0.001, retention_pct=99.0, corpus_size=1_000_000_000)
    assert recommendation_headline(app) is None
    assert any("No configuration meets every target" in error.value for error in app.error)
    relax_lines = [block.value for block in app.markdown if block.value.startswith("- relax ")]
    assert relax_lines, [block.value for block in app.markdown]


def test_planner_offers_the_three_exports(seeded_store):
    app = set_targets(start(), storage_gb=1.0, retention_pct=50.0)
    labels = {button.label for button in app.get("download_button")}
    assert labels == {"Configuration (JSON)", "FAISS factory string", "Qdrant collection + query"}


def test_a_malformed_upload_shows_the_librarys_message(seeded_store):
    app = start("views/evaluate.py")
    app.button_group(key="evaluate_source").set_value("upload")
    rerun(app)
    app.file_uploader(key="evaluate_upload").set_value(("broken.zip", b"this is not a zip archive", "application/zip"))
    rerun(app)
    messages = [error.value for error in app.error]
    assert len(messages) == 1 and "broken.zip" in messages[0], messages


def test_uploaded_embeddings_are_evaluated_and_stored(seeded_store):
    app = start("views/evaluate.py")
    app.button_group(key="evaluate_source").set_value("upload")
    rerun(app)
    upload = synthetic_embeddings_zip(seed=1)
    app.file_uploader(key="evaluate_upload").set_value(("vectors.zip", upload, "application/zip"))
    rerun(app)
    assert metric_value(app, "Documents") == "2,000"
    assert any(block.value == "**vectors** (precomputed embeddings, 64 dims)" for block in app.markdown)
    app.multiselect(key="evaluate_widths").set_value([64, 16])
    app.multiselect(key="evaluate_precisions").set_value(["fp32"])
    app.multiselect(key="evaluate_methods").set_value(["prefix"])
    app, job = click_and_wait(app, "evaluate_run", seeded_store)

    # The upload reached the job's process as a file saved under the cache, named by its content.
    data = Path(job["args"][job["args"].index("--data") + 1])
    assert data.name == "vectors.zip" and data.parent.parent.name == "uploads"
    assert data.read_bytes() == upload
    assert job["submitted_by"].startswith("app session ")
    runs = seeded_store.list_runs("evaluate")
    newest = runs.iloc[0]
    assert newest["dataset"] == "vectors" and newest["status"] == "finished"
    assert job["run_ids"] == [int(newest["run_id"])] and not job_boxes(app)
    stored = seeded_store.results(int(newest["run_id"]))
    assert sorted(stored["width"]) == [16, 64]
    assert any(block.value == f"Run #{int(newest['run_id'])} · vectors · precomputed" for block in app.subheader)


def test_runs_page_lists_every_run_and_deletes_one(seeded_store):
    app = start("views/runs.py")
    listed = app.dataframe[0].value
    assert sorted(listed["run_id"]) == sorted(seeded_store.list_runs()["run_id"])
    assert set(listed["kind"]) == {"evaluate", "bench"}

    bench_run = int(seeded_store.list_runs("bench").iloc[0]["run_id"])
    app.selectbox(key="runs_delete_choice").set_value(bench_run)
    app.button(key="runs_delete").click()
    rerun(app)
    # A dialog asks first; its confirmation reruns the dialog alone, which AppTest cannot drive (the browser
    # tests delete through it). Nothing is deleted before it.
    assert app.button(key="runs_delete_confirm").label == "Delete"
    assert sorted(seeded_store.list_runs()["kind"]) == ["bench", "evaluate"]
    assert len(seeded_store.rows("latency", bench_run))


def test_funnel_page_runs_a_hand_edited_funnel_against_exact_search(seeded_store):
    # Straight to the upload: the default built-in data would be encoded first.
    app = start("views/funnel.py", funnel_source="upload")
    app.file_uploader(key="funnel_upload").set_value(("vectors.zip", synthetic_embeddings_zip(), "application/zip"))
    rerun(app)
    app.button_group(key="funnel_mode").set_value("manual")
    rerun(app)
    assert not app.error, [error.value for error in app.error]
    labels = {metric.label for metric in app.metric}
    assert {"Funnel", "Exact full width", "Speedup", "Overlap@10"} <= labels
    funnel_results, exact_results = app.dataframe[-2].value, app.dataframe[-1].value
    assert len(funnel_results) == len(exact_results) == 10
    # Query q0 is a noisy copy of document 0, which exact search ranks first.
    assert exact_results.iloc[0]["document"] == "0"
    overlap = float(metric_value(app, "Overlap@10").rstrip("%")) / 100
    assert overlap == pytest.approx(funnel_results["in both"].mean())


def test_tuning_the_funnel_runs_as_a_job_and_shows_the_tuned_pick(seeded_store):
    from mrl_core.funnel import load_tuned_funnel

    app = start("views/funnel.py", funnel_source="upload")
    app.file_uploader(key="funnel_upload").set_value(("vectors.zip", synthetic_embeddings_zip(), "application/zip"))
    rerun(app)
    assert app.button_group(key="funnel_mode").value == "auto"
    app, job = click_and_wait(app, "funnel_tune", seeded_store)
    assert job["command"] == "funnel" and "--query" not in job["args"]
    fingerprint = job["result"]["dataset"]["fingerprint"]
    funnel, run_id = load_tuned_funnel(
        seeded_store, model="precomputed", dataset_fingerprint=fingerprint, target_recall=0.99, k=10
    )
    assert job["run_ids"] == [run_id]
    headline = f"**Tuned funnel** (run #{run_id}): `{funnel.describe()}`"
    assert any(block.value.startswith(headline) for block in app.markdown)
    assert not [button for button in app.button if button.key == "funnel_tune"]
    # The pick measured again on the queries the tuner did not see, as stored.
    heldout = seeded_store.get_run(run_id)["summary"]["heldout"]
    shown = {metric.label: metric.value for metric in app.metric}
    assert shown["Recall@10 on unseen queries"] == f"{heldout['recall_at_10']:.3f}"
    assert shown["Speedup on unseen queries"] == f"{heldout['speedup']:.1f}×"


def test_the_funnel_enlarged_with_synthetic_rows_shows_its_check_and_marks_distractors(seeded_store, monkeypatch):
    from mrl_core import enlarge
    from mrl_core.enlarge import stand_in_check_text

    monkeypatch.setattr(enlarge, "ENLARGE_SIZES", (6000,))
    app = start("views/funnel.py", funnel_source="upload")
    app.file_uploader(key="funnel_upload").set_value(("vectors.zip", synthetic_embeddings_zip(), "application/zip"))
    rerun(app)
    app, _ = click_and_wait(app, "funnel_tune", seeded_store)
    assert app.button_group(key="funnel_enlarge").options == ["Real: 2,000 documents", "Enlarged to 6,000 (synthetic distractors)"]
    app.button_group(key="funnel_enlarge").set_value(6000)
    rerun(app)
    assert app.info[0].value.startswith("No funnel tuned yet on vectors enlarged to 6,000 rows")
    app, job = click_and_wait(app, "funnel_tune", seeded_store)
    assert job["args"][job["args"].index("--enlarge") + 1] == "6000"
    enlargement = seeded_store.get_run(job["run_ids"][-1])["summary"]["enlargement"]
    assert app.warning[0].value.startswith("4,000 of these 6,000 rows are synthetic")
    assert stand_in_check_text(enlargement["check"]) in app.warning[0].value
    assert any("6,000 rows (4,000 of them synthetic)" in caption.value for caption in app.main.caption)
    documents = set(app.dataframe[-2].value["document"]) | set(app.dataframe[-1].value["document"])
    assert all(name.startswith("synthetic distractor #") or name.isdigit() for name in documents)


def test_a_dataset_is_read_by_its_path_inside_the_allowed_folders_only(seeded_store, tmp_path, monkeypatch):
    from tests.fixtures_data import write_beir

    allowed = tmp_path / "datasets"
    write_beir(allowed / "tiny")
    write_beir(tmp_path / "elsewhere")
    (allowed / "escape").symlink_to(tmp_path / "elsewhere")
    monkeypatch.setenv("MRL_DATA_ROOTS", str(allowed))
    app = start("views/evaluate.py", evaluate_source="path")
    assert app.info[0].value.startswith(f"Type the path of a dataset inside {allowed}")
    for typed, message in [
        (str(allowed / "tiny" / ".." / "tiny"), "a path may not contain '..'"),
        (str(allowed / "missing"), "no such file or folder"),
        (str(tmp_path / "elsewhere"), f"outside the folders this app may read ({allowed})"),
        (str(allowed / "escape"), "outside the folders this app may read"),
    ]:
        app.text_input(key="evaluate_path").set_value(typed)
        rerun(app)
        assert app.error[0].value.startswith(f"{typed}: ") and message in app.error[0].value
    app.text_input(key="evaluate_path").set_value(str(allowed / "tiny"))
    rerun(app)
    assert not app.error
    shown = {metric.label: metric.value for metric in app.metric}
    assert shown["Documents"] == "3" and shown["Judged queries"] == "2"


def test_funnel_page_opens_on_the_large_builtin_set_once_ready_and_an_example_runs(seeded_store):
    """A miniature of builtin:large in the cache, encoded and tuned: the page picks it, an example chip searches."""
    from mrl_core.builtin.gcide import EXAMPLE_QUERIES, write_cache
    from mrl_core.cli import main
    from mrl_core.cost import estimate_funnel_storage
    from mrl_core.data import load_dataset
    from mrl_core.funnel import load_tuned_funnel
    from tests.fixtures_data import large_miniature_entries

    assert start("views/funnel.py").button_group(key="funnel_source").value == "builtin:quick"  # nothing large yet
    write_cache(large_miniature_entries())
    assert main(["funnel", "--data", "builtin:large", "--model", "base"]) == 0  # encodes and tunes
    app = start("views/funnel.py")
    assert app.button_group(key="funnel_source").value == "builtin:large"
    assert any(caption.value.startswith("**builtin:large**: 405 documents") for caption in app.caption)
    # What the tuned funnel would keep at the Planner's corpus size (1M until the Planner says otherwise).
    large = load_dataset("builtin:large")
    funnel, _ = load_tuned_funnel(seeded_store, model="base", dataset_fingerprint=large.fingerprint, target_recall=0.99, k=10)
    ram_gb = estimate_funnel_storage(1_000_000, funnel.to_dicts()).ram_gb
    assert any(caption.value.startswith(f"At the Planner's 1M vectors this funnel keeps {ram_gb:.3g} GB in RAM")
               for caption in app.caption)
    query, target = next(iter(EXAMPLE_QUERIES.items()))
    assert app.button_group(key="funnel_example").options[0] == query
    app.button_group(key="funnel_example").set_value(query)
    rerun(app)
    assert app.text_input(key="funnel_query").value == query
    funnel_results, exact_results = app.dataframe[-2].value, app.dataframe[-1].value
    assert exact_results["document"].iloc[0] == target and target in set(funnel_results["document"])


@pytest.mark.slow
def test_first_start_measures_the_builtin_data(isolated_store):
    """The real first start: build builtin:quick, encode and evaluate it, benchmark latency (minutes)."""
    app = AppTest.from_file(APP, default_timeout=TIMEOUT_S)
    app.run()
    assert not app.exception, [exception.value for exception in app.exception]
    job = wait_for_job(isolated_store, timeout_s=1800)
    assert job["command"] == "first-start"
    rerun(app)
    evaluation = isolated_store.latest_run("evaluate")
    assert evaluation["dataset"] == "builtin:quick" and evaluation["model"] == "base"
    assert len(isolated_store.results(int(evaluation["run_id"]))) == 7 * 5 * 2  # widths x precisions x methods
    # One benchmark run per size, smallest first, so each landed while the next was measured.
    benches = isolated_store.list_runs("bench").sort_values("run_id")
    sizes = [sorted(isolated_store.rows("latency", int(run))["corpus_size"].unique()) for run in benches["run_id"]]
    assert sizes == [[10_000], [30_000], [100_000], [1_000_000]]
    assert job["result"]["bench_run_ids"] == list(benches["run_id"])
    assert app.title[0].value == "Plan capacity" and not job_boxes(app)

    # A later start reads the store and measures nothing again.
    runs_before = len(isolated_store.list_runs())
    again = AppTest.from_file(APP, default_timeout=TIMEOUT_S)
    again.run()
    assert not again.exception and len(isolated_store.list_runs()) == runs_before
    assert len(isolated_store.jobs()) == 1

    # The live funnel on the built-in texts (embeddings cached by the evaluation): a typed query.
    again.switch_page("views/funnel.py")
    again.session_state["funnel_mode"] = "manual"
    again.run()
    again.text_input(key="funnel_query").set_value("Return the number of items in a container.")
    again.run()
    assert not again.exception and not again.error
    funnel_results, exact_results = again.dataframe[-2].value, again.dataframe[-1].value
    assert len(funnel_results) == len(exact_results) == 10
    assert exact_results["text"].str.len().gt(0).all()


def test_the_train_pages_choices_survive_a_visit_to_another_page(seeded_store):
    """Streamlit drops a widget's value when its page is not shown; these widgets keep theirs for the session."""
    app = start("views/train.py")
    app.button_group(key="train_mode").set_value("adaptor")
    rerun(app)
    app.number_input(key="train_epochs_adaptor").set_value(7)
    app.multiselect(key="train_dims").set_value([128, 64])
    rerun(app)
    app.switch_page("views/runs.py")
    rerun(app)
    app.switch_page("views/train.py")
    rerun(app)
    assert app.button_group(key="train_mode").value == "adaptor"
    assert app.number_input(key="train_epochs_adaptor").value == 7
    assert app.multiselect(key="train_dims").value == [128, 64]


def test_training_an_adaptor_draws_before_and_after(seeded_store, tmp_path):
    app = start("views/train.py", train_source="upload")
    app.file_uploader(key="train_upload").set_value(("vectors.zip", synthetic_embeddings_zip(), "application/zip"))
    rerun(app)
    assert app.button_group(key="train_mode").value == "adaptor"
    app.multiselect(key="train_dims").set_value([64, 16])
    app.number_input(key="train_epochs_adaptor").set_value(1)
    app.text_input(key="train_out_adaptor").set_value(str(tmp_path / "adaptor.npz"))
    app, job = click_and_wait(app, "train_run", seeded_store)
    assert not app.error, [error.value for error in app.error]

    train_run = seeded_store.latest_run("train")
    assert train_run["params"]["mode"] == "adaptor" and (tmp_path / "adaptor.npz").exists()
    heading = f"Held-out quality before and after training (run #{int(train_run['run_id'])}, adaptor)"
    assert [block.value for block in app.subheader] == [heading]
    # The trained adaptor is now offered wherever a model is picked for this kind of data.
    offered = f"adaptor.npz (run #{int(train_run['run_id'])}, trained from precomputed)"
    assert app.selectbox(key="train_model").options == ["The uploaded embeddings", offered]
    assert int(train_run["run_id"]) in job["run_ids"] and job["result"]["out"] == str(tmp_path / "adaptor.npz")


def test_a_job_the_command_refuses_shows_its_message_and_starts_nothing(seeded_store, tmp_path):
    app = start("views/train.py", train_source="upload")
    app.file_uploader(key="train_upload").set_value(("vectors.zip", synthetic_embeddings_zip(), "application/zip"))
    rerun(app)
    existing = tmp_path / "adaptor.npz"
    existing.write_bytes(b"an earlier adaptor")
    app.text_input(key="train_out_adaptor").set_value(str(existing))
    app.button(key="train_run").click()
    rerun(app)
    assert [error.value for error in app.main.error] == [
        f"Could not start “Training (adaptor) on 0 pairs from precomputed”: {existing} already exists; choose "
        "another output path or pass overwrite=True (--overwrite)"
    ]
    assert seeded_store.jobs().empty and existing.read_bytes() == b"an earlier adaptor"
    assert app.button(key="train_run").label == "Train"


def test_a_refreshed_page_finds_its_job_instead_of_offering_the_button_again(seeded_store, monkeypatch):
    """A new session (a refresh, another tab) on the same store sees the job and no button; the job goes on."""
    # Another job holds the only slot: a stand-in record whose process is a sleeping child of this test, so the
    # page's job waits in the queue for as long as the test needs. It reports progress, as a running job does
    # (the page's job, not yet reporting, then reads NaN beside it in the store's frame of jobs).
    monkeypatch.setenv("MRL_MAX_JOBS", "1")
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        other = seeded_store.add_job("bench", ["--data", "elsewhere"], label="another job")
        seeded_store.update_job(
            other, status="running", pid=sleeper.pid, pid_started=psutil.Process(sleeper.pid).create_time(),
            phase="bench", progress_done=3, progress_total=49,
        )
        upload = ("vectors.zip", synthetic_embeddings_zip(seed=2), "application/zip")
        choices = {"evaluate_widths": [64, 16], "evaluate_precisions": ["fp32"], "evaluate_methods": ["prefix"]}
        app = start("views/evaluate.py", evaluate_source="upload")
        app.file_uploader(key="evaluate_upload").set_value(upload)
        rerun(app)
        for key, value in choices.items():
            app.multiselect(key=key).set_value(value)
        app.button(key="evaluate_run").click()
        rerun(app)
        (job,) = seeded_store.jobs(statuses=["queued"]).to_dict("records")
        box = f"**Evaluating vectors with precomputed**: queued as job #{job['job_id']}, waiting for 1 job before it."
        assert job_boxes(app) == [box]

        refreshed = start("views/evaluate.py", evaluate_source="upload")
        refreshed.file_uploader(key="evaluate_upload").set_value(upload)
        rerun(refreshed)
        assert job_boxes(refreshed) == [box]
        assert not [button for button in refreshed.button if button.key == "evaluate_run"]
    finally:
        sleeper.kill()
        sleeper.wait()
    # The stand-in's process is gone: its slot frees and the page's job runs to the end.
    job = wait_for_job(seeded_store)
    assert seeded_store.get_job(other)["status"] == "unfinished"
    rerun(refreshed)
    assert not job_boxes(refreshed)
    assert any(block.value == f"Run #{job['run_ids'][0]} · vectors · precomputed" for block in refreshed.subheader)
    assert len(seeded_store.jobs()) == 2


# -- the figures the pages draw (mrl_core/figures.py: pareto_chart, capacity_projection, funnel_stage_times) -------
def test_pareto_chart_marks_the_feasible_region_and_every_candidate():
    import pandas as pd

    from mrl_core.figures import pareto_chart

    candidates = pd.DataFrame(
        {
            "label": ["small", "chosen", "unmeasured"],
            "storage_gb": [0.1, 1.0, 2.0],
            "ndcg_at_10": [0.5, 0.9, 0.8],
            "retention": [0.5, 0.9, 0.8],
            "p95_ms": [1.0, 2.0, None],
            "feasible": [False, True, False],
            "on_frontier": [True, True, False],
            "reasons": [["retention 0.5 < 0.9"], [], ["no latency measured"]],
        }
    )
    figure = pareto_chart(candidates, {"max_storage_gb": 1.5, "min_retention": 0.9}, recommended="chosen")
    points = {trace.name: list(trace.x) for trace in figure.data}
    assert points == {
        "meets every target": [1.0],
        "misses a target": [0.1],
        "latency not measured": [2.0],
        "Pareto front": [0.1, 1.0],
        "recommended": [1.0],
    }
    region = figure.layout.shapes[0]
    # retention = nDCG / full-width nDCG, so full width scores 1.0 and a 0.9 floor is nDCG@10 0.9.
    assert (region.x1, region.y0) == (1.5, pytest.approx(0.9))


def test_capacity_projection_draws_formula_storage_and_measured_then_projected_latency():
    import pandas as pd

    from mrl_core.figures import capacity_projection

    config = {"label": "prefix 64 fp32/flat", "kind": "single", "width": 64, "precision": "fp32", "index_type": "flat",
              "stages": [{"width": 64, "precision": "fp32", "index_type": "flat"}]}
    latency = pd.DataFrame(
        {
            "run_id": [1, 1, 1], "index_type": ["flat", "flat", "binary"], "width": [64, 64, 64],
            "precision": ["fp32", "fp32", "binary"], "corpus_size": [1000, 2000, 1000], "batch_size": [64, 64, 64],
            "p50_ms": [0.5, 1.0, 0.1], "p95_ms": [1.0, 2.0, 0.2], "status": ["finished"] * 3,
        }
    )
    figure = capacity_projection([config], latency, pd.DataFrame(), [1000, 10_000])
    storage, projected, measured = figure.data
    # Flat fp32 keeps 4 bytes per dimension: 64 * 4 * 10,000 bytes = 0.00256 GB.
    assert list(storage.y) == pytest.approx([0.000256, 0.00256])
    # Latency doubles with the corpus between the measured sizes, so a power law gives 10 ms at 10,000.
    assert list(projected.y) == pytest.approx([1.0, 10.0])
    assert list(measured.x) == [1000, 2000] and list(measured.y) == [1.0, 2.0]


def test_capacity_projection_projects_a_funnel_from_its_own_rows_as_the_planner_matches_them():
    import pandas as pd

    from mrl_core.figures import capacity_projection

    stages = [
        {"width": 32, "precision": "binary", "index_type": "binary", "shortlist_size": 200},
        {"width": 384, "precision": "fp32", "index_type": "flat", "shortlist_size": 10},
    ]
    config = {"label": "funnel", "kind": "funnel", "stages": stages, "width": 32, "precision": "binary",
              "index_type": "binary"}
    funnel_row = {"stages": stages, "dataset_fingerprint": "a", "model": "m", "status": "finished"}
    funnels = pd.DataFrame([
        dict(funnel_row, run_id=1, corpus_size=1000, p50_ms=0.5, p95_ms=1.0),
        dict(funnel_row, run_id=1, corpus_size=2000, p50_ms=1.0, p95_ms=2.0),
        # Another dataset's measurement of the same stages, newer: left out when the dataset is named.
        dict(funnel_row, run_id=2, corpus_size=2000, p50_ms=4.0, p95_ms=8.0, dataset_fingerprint="b"),
    ])
    figure = capacity_projection([config], pd.DataFrame(), funnels, [1000, 10_000], dataset_fingerprint="a", model="m")
    _, projected, measured = figure.data
    # The binary first stage scans linearly: 1 ms per 1,000 vectors gives 10 ms at 10,000.
    assert list(projected.y) == pytest.approx([1.0, 10.0])
    assert list(measured.x) == [1000, 2000] and list(measured.y) == [1.0, 2.0]


def test_funnel_stage_times_stacks_the_stages_beside_exact_search():
    from mrl_core.figures import funnel_stage_times

    result = {
        "stages": [
            {"width": 64, "index_type": "binary", "shortlist_size": 100},
            {"width": 384, "index_type": "flat", "shortlist_size": 10},
        ],
        "stage_ms": [0.2, 0.05],
        "funnel_ms": 0.25,
        "exact_ms": 1.5,
    }
    figure = funnel_stage_times(result)
    bars = [(trace.y[0], trace.x[0]) for trace in figure.data]
    assert bars == [("funnel", 0.2), ("funnel", 0.05), ("exact full width", 1.5)]
    assert figure.data[0].name == "stage 1: binary 64 → keep 100"
    result["stages"][0] = {"width": 64, "index_type": "flat", "precision": "int8", "shortlist_size": 100}
    assert funnel_stage_times(result).data[0].name == "stage 1: flat int8 64 → keep 100"


def test_evaluate_benchmarks_widths_the_store_has_no_latency_for(seeded_store, monkeypatch):
    app = start("views/evaluate.py", evaluate_source="upload")
    # 128-d vectors: the seeded benchmark covers widths up to 64 only.
    app.file_uploader(key="evaluate_upload").set_value(
        ("wide.zip", synthetic_embeddings_zip(width=128), "application/zip")
    )
    rerun(app)
    app.multiselect(key="evaluate_widths").set_value([128, 64])
    app.multiselect(key="evaluate_precisions").set_value(["fp32"])
    app.multiselect(key="evaluate_methods").set_value(["prefix"])
    app, _ = click_and_wait(app, "evaluate_run", seeded_store)
    assert [warning.value for warning in app.warning] == [
        "No search latency measured yet at widths 128; the Planner cannot judge them against a latency target "
        "until they are benchmarked on this machine."
    ]
    # The first start's sizes go up to 1M (minutes); two small ones keep this test quick.
    from mrl_core import bench as bench_module

    monkeypatch.setattr(bench_module, "DATASET_BENCH_CORPUS_SIZES", (3_000, 10_000))
    app, job = click_and_wait(app, "evaluate_bench", seeded_store)
    assert not app.warning
    assert job["args"][job["args"].index("--corpus-sizes") + 1] == "3000,10000"
    bench = seeded_store.latest_run("bench")
    latency = seeded_store.rows("latency", int(bench["run_id"]))
    assert set(latency["width"]) == {128} and set(latency["corpus_size"]) == {3_000, 10_000}
    # Recorded against the evaluated dataset and model, with the first start's settings (mrl_core.bench.bench_dataset).
    evaluation = seeded_store.latest_run("evaluate")
    assert (bench["dataset"], bench["model"]) == ("wide", "precomputed")
    assert bench["dataset_fingerprint"] == evaluation["dataset_fingerprint"]
    assert bench["params"]["query_count"] == 50
    # HNSW and IVF at every size, each with its recall against exact search at the floor it was tuned to.
    approximate = latency[latency["index_type"].isin(["hnsw", "ivf"])]
    assert len(approximate) == 4 and (approximate["recall_at_10"] >= 0.99).all()


def test_first_start_measures_only_what_the_store_lacks(seeded_store, synthetic_dataset, monkeypatch):
    """The library's first start on a store that has an evaluation but lost its benchmark: it benchmarks only,
    one run per size, smallest first."""
    from mrl_core.encode import embed_dataset

    seeded_store.delete_run(int(seeded_store.latest_run("bench")["run_id"]))
    monkeypatch.setattr(first_start, "DATASET_BENCH_CORPUS_SIZES", (6_000, 2_000))
    assert first_start.missing_measurements(seeded_store) == ["bench"]
    assert first_start.missing_bench_sizes(seeded_store) == [2_000, 6_000]
    # The generated vectors stand in for the base model's (no encoding here); two widths keep it quick.
    monkeypatch.setattr(
        first_start, "embed_dataset", lambda dataset, model, progress: embed_dataset(dataset, "precomputed")
    )
    monkeypatch.setattr(first_start, "FIRST_START_WIDTHS", (64, 16))
    started, done, reports = [], [], []

    def step_progress(step):
        started.append(step)
        return (lambda finished, total: reports.append((finished, total))) if step == "bench" else None

    result = first_start.measure_first_start(
        seeded_store, synthetic_dataset, step_progress=step_progress, step_done=done.append
    )
    assert (started, done, result.evaluation_run_id) == (["embed", "bench", "bench"], ["bench"], None)
    # Per size: 2 widths x 7 index/precision pairs (flat 3, binary 2, HNSW, IVF).
    assert [len(bench.rows) for bench in result.benches] == [14, 14] and reports[-1] == (14, 14)
    sizes = [sorted(seeded_store.rows("latency", bench.run_id)["corpus_size"].unique()) for bench in result.benches]
    assert sizes == [[2_000], [6_000]]
    bench = seeded_store.get_run(result.benches[0].run_id)
    assert (bench["dataset"], bench["dataset_fingerprint"]) == ("synthetic", synthetic_dataset.fingerprint)
    assert first_start.missing_measurements(seeded_store) == []
    assert first_start.measure_first_start(seeded_store, synthetic_dataset).benches == []


def first_start_box(app: AppTest) -> int:
    """The job id the page's one job box shows, which must be the first start's, queued or running."""
    (box,) = job_boxes(app)
    found = re.match(r"\*\*First start: measuring the built-in data\*\*: (?:queued|running) as job #(\d+)", box)
    assert found, box
    return int(found.group(1))


def cancel_newest_job(store) -> dict:
    from mrl_core.jobs import cancel

    return cancel(store, int(store.jobs().iloc[0]["job_id"]), grace_s=5.0)


def test_first_start_runs_as_a_job_and_the_planner_waits_only_for_the_evaluation(isolated_store):
    """An empty store: the Planner submits the first start once and shows only its progress; a cancelled one
    shows how it ended and a button to try again, and is not started again by itself."""
    app = start()
    (job,) = isolated_store.jobs().to_dict("records")
    assert job["command"] == "first-start" and job["status"] in ACTIVE_JOB_STATUSES
    assert first_start_box(app) == job["job_id"]
    assert not app.get("select_slider") and not app.main.button
    # Another tab finds the same job.
    other_tab = start()
    assert len(isolated_store.jobs()) == 1 and len(job_boxes(other_tab)) == 1

    assert cancel_newest_job(isolated_store)["status"] == "cancelled"
    rerun(app)
    # The job's process may not have claimed its slot yet (a slow start on a busy machine): both read as cancelled.
    (error,) = [error.value for error in app.main.error]
    assert error in (
        f"First start: measuring the built-in data (job #{job['job_id']}) cancelled: cancelled",
        f"First start: measuring the built-in data (job #{job['job_id']}) cancelled: cancelled while queued",
    )
    rerun(app)
    assert len(isolated_store.jobs()) == 1 and not job_boxes(app)
    app.button(key="first_start_again").click()
    rerun(app)
    again = isolated_store.jobs().iloc[0]
    assert len(isolated_store.jobs()) == 2 and again["command"] == "first-start"
    assert first_start_box(app) == again["job_id"]


def test_the_planner_works_from_the_stored_evaluation_while_the_first_start_benchmarks(seeded_store, monkeypatch):
    from mrl_core.bench import DATASET_BENCH_CORPUS_SIZES

    # The first start's real sizes, none of which the seeded benchmark measured; the job is cancelled at the end.
    monkeypatch.setattr(first_start, "DATASET_BENCH_CORPUS_SIZES", DATASET_BENCH_CORPUS_SIZES)
    app = set_targets(start(), storage_gb=1.0, retention_pct=50.0)
    (job,) = seeded_store.jobs().to_dict("records")
    assert job["command"] == "first-start" and first_start_box(app) == job["job_id"]
    assert any(
        "Latency is measured at 10k, 30k, 100k, 1M vectors, smallest first." in caption.value
        for caption in app.main.caption
    )
    # Quality comes from the stored evaluation, latency from the rows there are: the planner answers meanwhile.
    expected = expected_recommendation(seeded_store, storage_gb=1.0, retention_pct=50.0)
    assert metric_value(app, "Width") == f"{expected['width']} dims"


PAGE_SCRIPTS = [Path(APP), *sorted((Path(APP).parent / "views").glob("*.py"))]


@pytest.mark.parametrize("script", PAGE_SCRIPTS, ids=lambda path: path.name)
def test_page_scripts_have_no_stray_bare_strings(script):
    """Streamlit's magic writes a page script's bare string expressions onto the page: only docstrings may be bare."""
    tree = ast.parse(script.read_text())
    stray = []
    for node in ast.walk(tree):
        for field in ("body", "orelse", "finalbody"):
            statements = getattr(node, field, None)
            if not isinstance(statements, list):
                continue
            for position, statement in enumerate(statements):
                is_docstring = (
                    field == "body" and position == 0 and isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef))
                )
                bare_string = isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant) and isinstance(
                    statement.value.value, str
                )
                if bare_string and not is_docstring:
                    stray.append(statement.lineno)
    assert not stray, f"{script.name}: bare strings at lines {stray}"


# -- verifying the recommendation on this machine -----------------------------------------------------------------


def test_verify_on_this_machine_shows_predicted_next_to_measured_and_marks_the_pick(
    isolated_store, tmp_path, monkeypatch
):
    from conftest import matryoshka_like_folder
    from mrl_core.bench import run_bench
    from mrl_core.data import load_dataset
    from mrl_core.evaluate import run_evaluation

    # A dataset on disk, so the verification can reload the rows its evaluation recorded.
    folder = tmp_path / "vectors"
    corpus, queries = matryoshka_like_folder(folder)
    dataset = load_dataset(folder)
    run_evaluation(dataset, "precomputed", widths=[64, 32], precisions=["fp32", "binary"], methods=["prefix"], store=isolated_store)
    run_bench(
        corpus, widths=[64, 32], corpus_sizes=[2000, 4000], index_types=["flat", "binary"], precisions=["fp32", "binary"],
        query_embeddings=queries, query_count=20, store=isolated_store,
        run_fields={"model": "precomputed", "dataset": dataset.name, "dataset_fingerprint": dataset.fingerprint},
    )
    # These sizes stand for the first start's, which would otherwise start measuring the built-in data.
    monkeypatch.setattr(first_start, "DATASET_BENCH_CORPUS_SIZES", (2000, 4000))
    app = set_targets(start(), storage_gb=1.0, retention_pct=50.0, corpus_size=10_000)
    app, job = click_and_wait(app, "planner_verify", isolated_store)

    (stored,) = isolated_store.rows("verifications").to_dict("records")
    # The job picked what the page recommends, with the page's targets.
    assert job["result"]["recommendation"]["label"] == stored["label"]
    assert job["result"]["verification"]["measured_p95_ms"] == pytest.approx(stored["measured_p95_ms"])
    assert stored["corpus_size"] == 10_000 and stored["planned_corpus_size"] == 10_000
    table = next(frame.value for frame in app.dataframe if "measured / predicted" in frame.value.columns)
    assert list(table["measure"]) == ["p50 latency (ms)", "p95 latency (ms)", "recall@10"]
    assert table["measured"].iloc[1] == pytest.approx(stored["measured_p95_ms"])
    assert table["predicted"].iloc[1] == pytest.approx(stored["predicted_p95_ms"])
    captions = " ".join(caption.value for caption in app.caption)
    assert "Stand-in check at 2,000 rows" in captions and "Built at 10,000 vectors" in captions
    # After the rerun the planner reads the stored verification and marks the pick.
    assert any("Verified on this machine" in block.value for block in app.markdown)


def test_verify_on_data_that_cannot_be_reloaded_says_why_without_a_traceback(seeded_store):
    app = set_targets(start(), storage_gb=1.0, retention_pct=50.0, corpus_size=10_000)
    app, job = click_and_wait(app, "planner_verify", seeded_store, status="failed")
    assert "cannot reload the evaluated dataset 'synthetic'" in job["error"]
    assert any(
        f"(job #{job['job_id']}) failed: " in error.value and "cannot reload the evaluated dataset 'synthetic'" in error.value
        for error in app.error
    ), [error.value for error in app.error]
    assert seeded_store.rows("verifications").empty
    # The button is offered again.
    assert app.button(key="planner_verify").label == "Verify on this machine"


def test_a_corpus_past_the_machine_is_sharded_and_its_latency_marked_projected(seeded_store):
    app = start()
    app.number_input(key="planner_machine_ram_gb").set_value(1.0)
    app = set_targets(app, storage_gb=100_000.0, retention_pct=50.0, corpus_size=10_000_000_000)
    planner = WidthPlanner(
        10_000_000_000, max_storage_gb=100_000.0, max_p95_ms=SLACK_P95_MS, min_retention=0.5,
        machine=Machine.from_gb(1.0, this_machine_cores()),
    ).fit(seeded_store)
    chosen = planner.recommendation_
    assert chosen is not None and chosen["shards"] > 1
    sharded = [block.value for block in app.markdown if block.value.startswith(":material/dns: **Sharded**")]
    assert len(sharded) == 1 and f"**{chosen['machines']:,} machines** of 1 GB" in sharded[0]
    # The bench measured 2,000 to 8,000 vectors: a shard of millions is a projection, and the card says so.
    assert chosen["latency_projected"]
    assert any(metric.label.startswith("p95 latency (projected, error") for metric in app.metric)
