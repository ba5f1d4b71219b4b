"""The figures the app and experiments draw (mrl_core/figures.py), on small hand-made inputs: traces, values, marks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mrl_core.figures import (
    LABEL_SYMBOLS,
    PRECISION_COLOURS,
    capacity_projection,
    funnel_stage_times,
    pareto_chart,
    quality_vs_width,
)
from mrl_core.deployment import Deployment, Machine
from mrl_core.planner import WidthPlanner
from mrl_core.store import ResultStore

# -- quality_vs_width --------------------------------------------------------------------------------------

RESULTS = pd.DataFrame(
    [  # deliberately out of order: the figure sorts by width and orders methods and precisions itself
        ("pca", 32, "fp32", 0.55, 0.70),
        ("prefix", 32, "int8", 0.47, 0.66),
        ("prefix", 64, "fp32", 0.60, 0.80),
        ("pca", 64, "fp32", 0.60, 0.80),
        ("prefix", 16, "fp32", 0.30, 0.45),
        ("prefix", 64, "int8", 0.58, 0.79),
        ("prefix", 32, "fp32", 0.50, 0.68),
    ],
    columns=["method", "width", "precision", "ndcg_at_10", "recall_at_10"],
)


def traces_by_name(figure) -> dict:
    return {trace.name: trace for trace in figure.data}


def test_quality_vs_width_draws_one_line_per_method_and_precision_with_the_input_values():
    figure = quality_vs_width(RESULTS)
    assert [trace.name for trace in figure.data] == ["prefix fp32", "prefix int8", "pca fp32"]
    lines = traces_by_name(figure)
    assert list(lines["prefix fp32"].x) == [16, 32, 64] and list(lines["prefix fp32"].y) == [0.30, 0.50, 0.60]
    assert list(lines["prefix int8"].x) == [32, 64] and list(lines["prefix int8"].y) == [0.47, 0.58]
    assert list(lines["pca fp32"].x) == [32, 64] and list(lines["pca fp32"].y) == [0.55, 0.60]
    # Colour is the precision, dash the method.
    assert lines["prefix fp32"].line.color == lines["pca fp32"].line.color == PRECISION_COLOURS["fp32"]
    assert lines["prefix int8"].line.color == PRECISION_COLOURS["int8"]
    assert (lines["prefix fp32"].line.dash, lines["pca fp32"].line.dash) == ("solid", "dash")
    assert figure.layout.xaxis.type == "log" and list(figure.layout.xaxis.tickvals) == [16, 32, 64]
    assert list(figure.layout.xaxis.ticktext) == ["16", "32", "64"]
    assert figure.layout.yaxis.title.text == "ndcg_at_10"


def test_quality_vs_width_plots_the_chosen_metric_and_skips_cells_without_it():
    results = RESULTS.copy()
    results.loc[(results["method"] == "prefix") & (results["width"] == 16), "recall_at_10"] = None
    lines = traces_by_name(quality_vs_width(results, metric="recall_at_10"))
    assert list(lines["prefix fp32"].x) == [32, 64] and list(lines["prefix fp32"].y) == [0.68, 0.80]


def test_quality_vs_width_names_lines_by_run_when_several_runs_share_the_chart():
    base = RESULTS[RESULTS["method"] == "prefix"].assign(run_id=1, model="base")
    trained = base.assign(run_id=2, model="mrl", ndcg_at_10=base["ndcg_at_10"] + 0.05)
    figure = quality_vs_width(pd.concat([base, trained]))
    assert [trace.name for trace in figure.data] == [
        "run 1: base: prefix fp32", "run 1: base: prefix int8", "run 2: mrl: prefix fp32", "run 2: mrl: prefix int8",
    ]
    lines = traces_by_name(figure)
    assert list(lines["run 2: mrl: prefix fp32"].y) == pytest.approx([0.35, 0.55, 0.65])
    # The marker tells the runs apart; the colour still tells the precision.
    assert lines["run 1: base: prefix fp32"].marker.symbol == LABEL_SYMBOLS[0]
    assert lines["run 2: mrl: prefix fp32"].marker.symbol == LABEL_SYMBOLS[1]
    assert lines["run 2: mrl: prefix fp32"].line.color == PRECISION_COLOURS["fp32"]


def test_quality_vs_width_refuses_rows_it_cannot_draw():
    with pytest.raises(ValueError, match=r"lack the columns \['precision'\]"):
        quality_vs_width(RESULTS.drop(columns="precision"))
    with pytest.raises(ValueError, match="metric='latency': expected one of"):
        quality_vs_width(RESULTS, metric="latency")


# -- pareto_chart -------------------------------------------------------------------------------------------

CANDIDATES = pd.DataFrame(
    {
        "label": ["binary 64", "int8 64", "fp32 64", "fp32 64 hnsw", "fp32 16"],
        "storage_gb": [0.008, 0.064, 0.256, 0.512, 0.064],
        "ndcg_at_10": [0.47, 0.60, 0.62, 0.62, np.nan],
        "retention": [0.47 / 0.62, 0.60 / 0.62, 1.0, 1.0, np.nan],
        "p95_ms": [0.5, 3.0, 4.5, np.nan, 1.0],
        "feasible": [False, True, False, False, False],
        "on_frontier": [True, True, True, False, False],
        "reasons": [["nDCG@10 0.4700 < min_ndcg 0.5500"], [], ["storage 0.256 GB > max_storage_gb 0.1 GB"],
                    ["no latency measured"], ["no quality measured"]],
    }
)


def test_pareto_chart_places_every_candidate_and_stars_the_recommendation():
    figure = pareto_chart(CANDIDATES, {"max_storage_gb": 0.1, "min_ndcg": 0.55}, recommended="int8 64")
    traces = traces_by_name(figure)
    assert list(traces) == [
        "meets every target", "misses a target", "latency not measured", "Pareto front", "recommended",
    ]
    assert (list(traces["meets every target"].x), list(traces["meets every target"].y)) == ([0.064], [0.60])
    assert list(traces["misses a target"].x) == [0.008, 0.256] and list(traces["misses a target"].y) == [0.47, 0.62]
    # Latency drives the colour of measured points.
    assert list(traces["misses a target"].marker.color) == [0.5, 4.5]
    assert list(traces["latency not measured"].x) == [0.512]
    # Without a measured nDCG@10 a candidate has no place on the chart.
    assert 0.064 not in list(traces["latency not measured"].x)
    assert [row[0] for row in traces["misses a target"].customdata] == ["binary 64", "fp32 64"]
    assert traces["misses a target"].customdata[1][2] == "storage 0.256 GB > max_storage_gb 0.1 GB"

    star = traces["recommended"]
    assert (list(star.x), list(star.y), star.marker.symbol) == ([0.064], [0.60], "star")
    front = traces["Pareto front"]
    assert list(front.x) == [0.008, 0.064, 0.256] and list(front.y) == [0.47, 0.60, 0.62]
    assert front.line.shape == "hv"

    (region,) = figure.layout.shapes[:1]
    assert (region.x1, region.y0) == (0.1, 0.55)
    annotations = {annotation.text for annotation in figure.layout.annotations}
    assert {"storage ≤ 0.1 GB", "nDCG@10 ≥ 0.550"} <= annotations


def test_pareto_chart_without_targets_or_recommendation_draws_points_only():
    figure = pareto_chart(CANDIDATES)
    assert "recommended" not in traces_by_name(figure)
    assert figure.layout.shapes == () and figure.layout.annotations == ()
    with pytest.raises(ValueError, match="no candidate has a measured nDCG@10"):
        pareto_chart(CANDIDATES.assign(ndcg_at_10=np.nan))


def test_pareto_chart_of_a_real_planner_stars_its_recommendation(tmp_path):
    store = ResultStore(tmp_path / "results.duckdb")
    fields = {"model": "m", "dataset": "tiny", "dataset_fingerprint": "fp-tiny"}
    quality = {(64, "fp32"): 0.62, (32, "fp32"): 0.56, (64, "int8"): 0.60, (64, "binary"): 0.47}
    with store.run("evaluate", **fields) as run_id:
        store.add_rows("results", run_id, [
            {"method": "prefix", "width": width, "precision": precision, "ndcg_at_10": ndcg}
            for (width, precision), ndcg in quality.items()
        ])
    with store.run("bench", **fields) as run_id:
        store.add_rows("latency", run_id, [
            {"index_type": "binary" if precision == "binary" else "flat", "width": width, "precision": precision,
             "corpus_size": 1_000_000, "p50_ms": 1.0, "p95_ms": 2.0, "threads": 1, "batch_size": 64}
            for width, precision in quality
        ])
    planner = WidthPlanner(1_000_000, max_storage_gb=0.1, max_p95_ms=5, min_ndcg=0.55).fit(store)
    assert planner.recommendation_["label"] == "prefix 64 int8/flat"

    figure = pareto_chart(planner.candidates_, planner.targets(), planner.recommendation_["label"])
    traces = traces_by_name(figure)
    star = traces["recommended"]
    assert (list(star.x), list(star.y)) == ([pytest.approx(0.064)], [pytest.approx(0.60)])
    points = ("meets every target", "misses a target", "latency not measured")
    assert sum(len(traces[name].x) for name in points if name in traces) == len(planner.candidates_)
    assert list(traces["meets every target"].customdata[:, 0]) == ["prefix 64 int8/flat"]


def test_pareto_hover_marks_projected_latency_with_its_error_and_the_shards():
    frame = CANDIDATES.assign(
        latency_projected=[False, True, True, False, False], latency_error=[0.0, 0.25, None, None, None],
        shards=[1, 1, 40, 1, 1],
    )
    traces = traces_by_name(pareto_chart(frame, {"max_storage_gb": 0.1, "min_ndcg": 0.55}))
    assert traces["meets every target"].customdata[0][1] == "3 ms (projected, error 25%)"
    assert [row[1] for row in traces["misses a target"].customdata] == [
        "0.5 ms", "4.5 ms (projected, error unknown), 40 shards",
    ]


# -- capacity_projection -------------------------------------------------------------------------------------

INT8_FLAT = {
    "label": "prefix 64 int8/flat", "kind": "single", "width": 64, "precision": "int8", "index_type": "flat",
    "stages": [{"width": 64, "precision": "int8", "index_type": "flat"}],
}
FP32_FLAT = dict(INT8_FLAT, label="prefix 64 fp32/flat", precision="fp32",
                 stages=[{"width": 64, "precision": "fp32", "index_type": "flat"}])
LATENCY = pd.DataFrame(
    {  # int8 scans measured at 100k and 1M, linear in corpus size; nothing measured for fp32
        "run_id": [1, 1], "index_type": ["flat", "flat"], "width": [64, 64], "precision": ["int8", "int8"],
        "corpus_size": [100_000, 1_000_000], "p50_ms": [0.2, 2.0], "p95_ms": [0.3, 3.0], "status": ["finished"] * 2,
    }
)


def test_capacity_projection_draws_storage_then_measured_and_projected_latency():
    sizes = [10_000_000, 100_000, 1_000_000]  # unsorted: the figure sorts them
    figure = capacity_projection([INT8_FLAT, FP32_FLAT], LATENCY, pd.DataFrame(), sizes)
    assert [trace.name for trace in figure.data] == [
        "prefix 64 int8/flat", "prefix 64 int8/flat (projected)", "prefix 64 int8/flat (measured)",
        "prefix 64 fp32/flat",
    ]
    int8_storage, projected, measured, fp32_storage = figure.data
    # Left panel, the cost model: SQ8 keeps 1 byte per dimension, fp32 4.
    assert list(int8_storage.x) == [100_000, 1_000_000, 10_000_000]
    assert list(int8_storage.y) == pytest.approx([0.0064, 0.064, 0.64])
    assert list(fp32_storage.y) == pytest.approx([0.0256, 0.256, 2.56])
    assert (int8_storage.xaxis, fp32_storage.xaxis) == ("x", "x")
    # Right panel: measured points as markers, the fit through every size dashed and its basis per point.
    assert (measured.xaxis, projected.xaxis) == ("x2", "x2")
    assert measured.mode == "markers" and list(measured.x) == [100_000, 1_000_000] and list(measured.y) == [0.3, 3.0]
    assert projected.line.dash == "dash" and list(projected.x) == [100_000, 1_000_000, 10_000_000]
    assert list(projected.y) == pytest.approx([0.3, 3.0, 30.0])
    assert projected.customdata[0] == "measured at 100,000 vectors"
    assert projected.customdata[2].startswith("projected to 10,000,000 from sizes 100,000, 1,000,000")
    assert projected.line.color == measured.marker.color == int8_storage.line.color != fp32_storage.line.color
    assert figure.layout.xaxis.type == figure.layout.xaxis2.type == figure.layout.yaxis2.type == "log"


def test_capacity_projection_storage_follows_vendor_overhead_and_replicas():
    figure = capacity_projection(
        [FP32_FLAT, INT8_FLAT], LATENCY, pd.DataFrame(), [1_000_000], deployment=Deployment(vendor="qdrant", replicas=2)
    )
    fp32_storage, int8_storage = figure.data[0], figure.data[1]
    # Qdrant x1.5 and two replicas: 256 B/vector of fp32 becomes 768 MB per million vectors.
    assert list(fp32_storage.y) == pytest.approx([0.768])
    # Qdrant keeps the fp32 originals beside int8 codes: (64 + 256) B x 1.5 x 2.
    assert list(int8_storage.y) == pytest.approx([0.96])


def test_capacity_projection_on_a_machine_splits_large_sizes_into_shards():
    from mrl_core.cost import merge_cost_ms

    # 64 MB, all usable, holds 1M 64-byte int8 codes: 10M vectors are 10 shards of 1M, a measured size.
    machine = Machine(ram_bytes=64_000_000, usable_ram_fraction=1.0)
    sizes = [100_000, 1_000_000, 10_000_000]
    figure = capacity_projection([INT8_FLAT], LATENCY, pd.DataFrame(), sizes, machine=machine)
    projected = traces_by_name(figure)["prefix 64 int8/flat (projected)"]
    assert list(projected.y) == pytest.approx([0.3, 3.0, 3.0 + merge_cost_ms(10)[1]])
    assert projected.customdata[2].startswith("10 shards of 1,000,000 vectors searched in parallel")
    assert "network time not included" in projected.customdata[2]


# -- funnel_stage_times --------------------------------------------------------------------------------------


def test_funnel_stage_times_stacks_one_segment_per_stage_beside_exact_search():
    result = {
        "stages": [
            {"width": 32, "precision": "int8", "index_type": "flat", "shortlist_size": 200},
            {"width": 128, "precision": "fp32", "index_type": "flat", "shortlist_size": 50},
            {"width": 384, "precision": "fp32", "index_type": "flat", "shortlist_size": 10},
        ],
        "stage_ms": [0.40, 0.08, 0.05],
        "funnel_ms": 0.53,
        "exact_ms": 4.2,
    }
    figure = funnel_stage_times(result)
    assert [trace.name for trace in figure.data] == [
        "stage 1: flat int8 32 → keep 200",
        "stage 2: rescore 128 → keep 50",
        "stage 3: rescore 384 → keep 10",
        "exact full-width search",
    ]
    assert [(trace.y[0], trace.x[0]) for trace in figure.data] == [
        ("funnel", 0.40), ("funnel", 0.08), ("funnel", 0.05), ("exact full width", 4.2),
    ]
    assert all(trace.orientation == "h" for trace in figure.data) and figure.layout.barmode == "stack"
    assert len({trace.marker.color for trace in figure.data}) == 4


def test_funnel_stage_times_draws_a_real_live_query():
    from mrl_core.funnel import Funnel, FunnelStage, live_query

    rng = np.random.default_rng(0)
    corpus = rng.standard_normal((500, 64)).astype(np.float32)
    corpus /= np.linalg.norm(corpus, axis=1, keepdims=True)
    funnel = Funnel((FunnelStage(16, 100, "binary"), FunnelStage(64, 10)))
    result = live_query(corpus, corpus[0], funnel, k=10, repeats=1)
    figure = funnel_stage_times(result)
    assert [trace.name for trace in figure.data] == [
        "stage 1: binary 16 → keep 100", "stage 2: rescore 64 → keep 10", "exact full-width search",
    ]
    assert [trace.x[0] for trace in figure.data] == [*result["stage_ms"], result["exact_ms"]]
