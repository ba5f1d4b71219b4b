"""Page logic of the Streamlit app, driven by Streamlit's AppTest on a store of real measured rows.

The store is seeded by ``seeded_store`` (conftest): an evaluation and a latency benchmark of a generated
precomputed-embedding dataset, so nothing is encoded here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from conftest import synthetic_embeddings_zip
from mrl_core.deployment import Machine, this_machine_cores
from mrl_core.planner import WidthPlanner

APP = str(Path(__file__).resolve().parents[1] / "app" / "streamlit_app.py")
TIMEOUT_S = 120
# Latency on a shared CPU is noisy; planner tests that are about storage or quality leave it slack.
SLACK_P95_MS = 10_000.0


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
    app.file_uploader(key="evaluate_upload").set_value(
        ("vectors.zip", synthetic_embeddings_zip(seed=1), "application/zip")
    )
    rerun(app)
    assert metric_value(app, "Documents") == "2,000"
    assert any(block.value == "**vectors** (precomputed embeddings, 64 dims)" for block in app.markdown)
    app.multiselect(key="evaluate_widths").set_value([64, 16])
    app.multiselect(key="evaluate_precisions").set_value(["fp32"])
    app.multiselect(key="evaluate_methods").set_value(["prefix"])
    app.button(key="evaluate_run").click()
    rerun(app)

    runs = seeded_store.list_runs("evaluate")
    newest = runs.iloc[0]
    assert newest["dataset"] == "vectors" and newest["status"] == "finished"
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
    assert list(seeded_store.list_runs()["kind"]) == ["evaluate"]
    assert seeded_store.rows("latency").empty


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


@pytest.mark.slow
def test_first_start_measures_the_builtin_data(isolated_store):
    """The real first start: build builtin:quick, encode and evaluate it, benchmark latency (minutes)."""
    app = AppTest.from_file(APP, default_timeout=1800)
    app.run()
    assert not app.exception, [exception.value for exception in app.exception]
    evaluation = isolated_store.latest_run("evaluate")
    assert evaluation["dataset"] == "builtin:quick" and evaluation["model"] == "base"
    assert len(isolated_store.results(int(evaluation["run_id"]))) == 7 * 5 * 2  # widths x precisions x methods
    bench = isolated_store.latest_run("bench")
    bench_sizes = sorted(isolated_store.rows("latency", int(bench["run_id"]))["corpus_size"].unique())
    assert bench_sizes == [10_000, 30_000, 100_000, 1_000_000]
    assert app.title[0].value == "Plan capacity"

    # A later start reads the store and measures nothing again.
    runs_before = len(isolated_store.list_runs())
    again = AppTest.from_file(APP, default_timeout=TIMEOUT_S)
    again.run()
    assert not again.exception and len(isolated_store.list_runs()) == runs_before

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


def test_training_an_adaptor_draws_before_and_after(seeded_store, tmp_path):
    app = start("views/train.py", train_source="upload")
    app.file_uploader(key="train_upload").set_value(("vectors.zip", synthetic_embeddings_zip(), "application/zip"))
    rerun(app)
    assert app.button_group(key="train_mode").value == "adaptor"
    app.multiselect(key="train_dims").set_value([64, 16])
    app.number_input(key="train_epochs_adaptor").set_value(1)
    app.text_input(key="train_out_adaptor").set_value(str(tmp_path / "adaptor.npz"))
    app.button(key="train_run").click()
    rerun(app)
    assert not app.error, [error.value for error in app.error]

    train_run = seeded_store.latest_run("train")
    assert train_run["params"]["mode"] == "adaptor" and (tmp_path / "adaptor.npz").exists()
    heading = f"Held-out quality before and after training (run #{int(train_run['run_id'])}, adaptor)"
    assert [block.value for block in app.subheader] == [heading]
    # The trained adaptor is now offered wherever a model is picked for this kind of data.
    offered = f"adaptor.npz (run #{int(train_run['run_id'])}, trained from precomputed)"
    assert app.selectbox(key="train_model").options == ["The uploaded embeddings", offered]


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
    app.button(key="evaluate_run").click()
    rerun(app)
    assert [warning.value for warning in app.warning] == [
        "No search latency measured yet at widths 128; the Planner cannot judge them against a latency target "
        "until they are benchmarked on this machine."
    ]
    # The first start's sizes go up to 1M (minutes); two small ones keep this test quick.
    from mrl_core import bench as bench_module

    monkeypatch.setattr(bench_module, "DATASET_BENCH_CORPUS_SIZES", (3_000, 10_000))
    app.button(key="evaluate_bench").click()
    rerun(app)
    assert not app.warning
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
    """The library's first start on a store that has an evaluation but lost its benchmark: it benchmarks only."""
    from mrl_core import first_start
    from mrl_core.encode import embed_dataset

    seeded_store.delete_run(int(seeded_store.latest_run("bench")["run_id"]))
    assert first_start.missing_measurements(seeded_store) == ["bench"]
    # The generated vectors stand in for the base model's (no encoding here); two widths keep it quick.
    monkeypatch.setattr(
        first_start, "embed_dataset", lambda dataset, model, progress: embed_dataset(dataset, "precomputed")
    )
    monkeypatch.setattr(first_start, "FIRST_START_WIDTHS", (64, 16))
    from mrl_core import bench as bench_module

    monkeypatch.setattr(bench_module, "DATASET_BENCH_CORPUS_SIZES", (2_000, 6_000))
    started, done, reports = [], [], []

    def step_progress(step):
        started.append(step)
        return (lambda finished, total: reports.append((finished, total))) if step == "bench" else None

    result = first_start.measure_first_start(
        seeded_store, synthetic_dataset, step_progress=step_progress, step_done=done.append
    )
    assert (started, done, result.evaluation_run_id) == (["embed", "bench"], ["bench"], None)
    # 2 widths x 2 sizes x 7 index/precision pairs (flat 3, binary 2, HNSW, IVF).
    assert reports[-1] == (28, 28) and len(result.bench.rows) == 28
    bench = seeded_store.get_run(result.bench.run_id)
    assert (bench["dataset"], bench["dataset_fingerprint"]) == ("synthetic", synthetic_dataset.fingerprint)
    assert first_start.missing_measurements(seeded_store) == []
    assert first_start.measure_first_start(seeded_store, synthetic_dataset).bench is None


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


def test_verify_on_this_machine_shows_predicted_next_to_measured_and_marks_the_pick(isolated_store, tmp_path):
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
    app = set_targets(start(), storage_gb=1.0, retention_pct=50.0, corpus_size=10_000)
    app.button(key="planner_verify").click()
    app = rerun(app)

    (stored,) = isolated_store.rows("verifications").to_dict("records")
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
    app.button(key="planner_verify").click()
    app = rerun(app)
    assert any("cannot reload the evaluated dataset 'synthetic'" in error.value for error in app.error)
    assert seeded_store.rows("verifications").empty


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
