"""Figures drawn from stored results; the app and the experiments share them."""

from __future__ import annotations

import pandas as pd

from mrl_core.deployment import Deployment, Machine
from mrl_core.widths import METHODS, PRECISIONS

QUALITY_METRICS = ("ndcg_at_10", "recall_at_10", "recall_at_100", "mrr_at_10", "fidelity_at_10", "retention")
PRECISION_COLOURS = {
    "fp32": "#1f77b4",
    "fp16": "#17becf",
    "int8": "#2ca02c",
    "binary": "#d62728",
    "binary+rescore": "#ff7f0e",
}
METHOD_DASHES = {"prefix": "solid", "pca": "dash"}
LABEL_SYMBOLS = ("circle", "square", "diamond", "triangle-up", "x", "star", "cross", "pentagon")


def quality_vs_width(results: pd.DataFrame, metric: str = "ndcg_at_10"):
    """Quality against width: one line per (method, precision), and per label when there are several.

    Width runs on a log2 axis with a tick at every measured width. Colour is the precision, the dash
    the method (prefix solid, PCA dashed) and the marker the label, so base and MRL-trained runs
    can share one chart. Labels come from a ``label`` column; without one, rows from several runs
    are labelled "run <id>: <model>".

    Args:
        results: rows shaped like the store's ``results`` table (``method``, ``width``, ``precision``
            and the metric), e.g. ``ResultStore.results(run_ids)``.
        metric: the column to plot, one of ``QUALITY_METRICS``.

    Returns:
        A plotly ``Figure``.

    Raises:
        ValueError: for an unknown metric, missing columns, no values for the metric (label-free
            runs only have ``fidelity_at_10``), or repeated cells within one label.

    Example:
        >>> results = pd.DataFrame({"method": "prefix", "precision": ["fp32", "fp32", "int8", "int8"],
        ...                         "width": [384, 64, 384, 64], "ndcg_at_10": [0.65, 0.48, 0.64, 0.47]})
        >>> figure = quality_vs_width(results)
        >>> [trace.name for trace in figure.data], figure.layout.xaxis.ticktext
        (['prefix fp32', 'prefix int8'], ('64', '384'))
    """
    import plotly.graph_objects as go

    if metric not in QUALITY_METRICS:
        raise ValueError(f"metric={metric!r}: expected one of {list(QUALITY_METRICS)}")
    missing = [column for column in ("method", "width", "precision", metric) if column not in results.columns]
    if missing:
        raise ValueError(f"results lack the columns {missing}; expected rows of the store's results table")
    frame = results.dropna(subset=[metric]).copy()
    if frame.empty:
        raise ValueError(f"no {metric} values to plot; label-free evaluations have fidelity_at_10 only")
    frame["label"] = _labels(frame)
    repeated = frame.duplicated(["label", "method", "width", "precision"])
    if repeated.any():
        cell = frame.loc[repeated].iloc[0]
        raise ValueError(
            f"{cell['method']} width {cell['width']} {cell['precision']} appears more than once for label "
            f"{cell['label']!r}; give each run its own value in a 'label' column"
        )

    labels = list(dict.fromkeys(frame["label"]))
    figure = go.Figure()
    for label_number, label in enumerate(labels):
        for method in _ordered(frame["method"], METHODS):
            for precision in _ordered(frame["precision"], PRECISIONS):
                line = frame[(frame["label"] == label) & (frame["method"] == method) & (frame["precision"] == precision)]
                if line.empty:
                    continue
                line = line.sort_values("width")
                name = f"{method} {precision}" if len(labels) == 1 else f"{label}: {method} {precision}"
                figure.add_trace(
                    go.Scatter(
                        x=line["width"],
                        y=line[metric],
                        mode="lines+markers",
                        name=name,
                        legendgroup=label,
                        line={"color": PRECISION_COLOURS.get(precision), "dash": METHOD_DASHES.get(method, "dot")},
                        marker={"symbol": LABEL_SYMBOLS[label_number % len(LABEL_SYMBOLS)], "size": 7},
                        hovertemplate=f"{name}<br>width %{{x}}<br>{metric} %{{y:.4f}}<extra></extra>",
                    )
                )
    widths = sorted(frame["width"].unique())
    figure.update_layout(
        xaxis={"title": "width (dimensions kept, log scale)", "type": "log", "tickvals": widths, "ticktext": [str(w) for w in widths]},
        yaxis={"title": metric},
        legend={"title": "method, precision" if len(labels) == 1 else "label: method, precision"},
        template="plotly_white",
    )
    return figure


def _labels(frame: pd.DataFrame) -> pd.Series:
    if "label" in frame.columns:
        return frame["label"].astype(str)
    if "run_id" in frame.columns and frame["run_id"].nunique() > 1:
        model = frame["model"].astype(str) if "model" in frame.columns else ""
        return "run " + frame["run_id"].astype(str) + ": " + model
    return pd.Series("results", index=frame.index)


def _ordered(values: pd.Series, known_order: tuple[str, ...]) -> list[str]:
    """Values present, known ones in their canonical order, then any others."""
    present = set(values)
    return [value for value in known_order if value in present] + sorted(present - set(known_order))


# -- planner figures (used by the app's Planner page) -----------------------------------------------------------
def pareto_chart(candidates: pd.DataFrame, targets: dict[str, float] | None = None, recommended: str | None = None):
    """Planner candidates as storage (log x) against nDCG@10, p95 latency as colour.

    Pareto-optimal candidates (``on_frontier``) are ringed and joined by a step line; candidates without
    measured latency are grey. The region meeting the storage and quality targets is shaded; a retention
    floor is drawn at floor x the full-width nDCG@10 implied by the candidates' own (nDCG, retention) pairs.

    Args:
        candidates: ``WidthPlanner.candidates_`` (label, storage_gb, p95_ms, ndcg_at_10, retention,
            feasible, on_frontier, reasons).
        targets: ``WidthPlanner.targets()``: max_storage_gb, max_p95_ms, min_ndcg, min_retention.
        recommended: label of the recommended candidate, drawn as a star.

    Returns:
        A plotly ``Figure``.

    Raises:
        ValueError: when no candidate has a measured nDCG@10.
    """
    import plotly.graph_objects as go

    targets = targets or {}
    frame = candidates.dropna(subset=["ndcg_at_10"]).copy()
    if frame.empty:
        raise ValueError("no candidate has a measured nDCG@10 to plot; evaluate a labelled dataset first")
    frame["status"] = frame["feasible"].map({True: "meets every target", False: "misses a target"})
    frame["why"] = frame["reasons"].map(lambda reasons: "<br>".join(reasons) if len(reasons) else "meets every target")
    frame["p95_text"] = [_p95_text(candidate) for candidate in frame.to_dict("records")]
    hover = (
        "%{customdata[0]}<br>storage %{x:.3g} GB<br>nDCG@10 %{y:.4f}<br>p95 %{customdata[1]}"
        "<br>%{customdata[2]}<extra></extra>"
    )
    measured = frame[frame["p95_ms"].notna()]
    unmeasured = frame[frame["p95_ms"].isna()]
    figure = go.Figure()

    storage_limit = targets.get("max_storage_gb")
    quality_floor = _quality_floor(frame, targets)
    if storage_limit is not None or quality_floor is not None:
        x_low = min(frame["storage_gb"].min(), storage_limit or frame["storage_gb"].min()) / 2
        figure.add_shape(
            type="rect", xref="x", yref="y", layer="below", line={"width": 0}, fillcolor="rgba(46, 160, 67, 0.10)",
            x0=x_low, x1=storage_limit if storage_limit is not None else frame["storage_gb"].max() * 2,
            y0=quality_floor if quality_floor is not None else frame["ndcg_at_10"].min(),
            y1=max(frame["ndcg_at_10"].max(), quality_floor or 0) * 1.02,
        )
        if storage_limit is not None:
            figure.add_vline(x=storage_limit, line={"color": "#2ea043", "dash": "dot"},
                             annotation_text=f"storage ≤ {storage_limit:g} GB", annotation_position="top left")
        if quality_floor is not None:
            figure.add_hline(y=quality_floor, line={"color": "#2ea043", "dash": "dot"},
                             annotation_text=f"nDCG@10 ≥ {quality_floor:.3f}", annotation_position="bottom right")

    for feasible, symbol in ((True, "circle"), (False, "circle-open")):
        part = measured[measured["feasible"] == feasible]
        if part.empty:
            continue
        figure.add_trace(
            go.Scatter(
                x=part["storage_gb"], y=part["ndcg_at_10"], mode="markers",
                name="meets every target" if feasible else "misses a target",
                customdata=part[["label", "p95_text", "why"]].to_numpy(),
                hovertemplate=hover,
                marker={
                    "symbol": symbol, "size": 9, "color": part["p95_ms"], "coloraxis": "coloraxis",
                    "line": {"width": 1.5},
                },
            )
        )
    if not unmeasured.empty:
        figure.add_trace(
            go.Scatter(
                x=unmeasured["storage_gb"], y=unmeasured["ndcg_at_10"], mode="markers", name="latency not measured",
                customdata=unmeasured[["label", "p95_text", "why"]].to_numpy(), hovertemplate=hover,
                marker={"symbol": "circle-open", "size": 8, "color": "#9aa0a6"},
            )
        )
    frontier = frame[frame["on_frontier"]].sort_values("storage_gb")
    if not frontier.empty:
        figure.add_trace(
            go.Scatter(
                x=frontier["storage_gb"], y=frontier["ndcg_at_10"].cummax(), mode="lines", name="Pareto front",
                line={"shape": "hv", "color": "#444", "width": 1}, hoverinfo="skip",
            )
        )
    chosen = frame[frame["label"] == recommended] if recommended else frame.iloc[0:0]
    if not chosen.empty:
        figure.add_trace(
            go.Scatter(
                x=chosen["storage_gb"], y=chosen["ndcg_at_10"], mode="markers", name="recommended",
                customdata=chosen[["label", "p95_text", "why"]].to_numpy(), hovertemplate=hover,
                marker={"symbol": "star", "size": 18, "color": "#f2b705", "line": {"width": 1, "color": "#333"}},
            )
        )
    latency_limit = targets.get("max_p95_ms")
    figure.update_layout(
        xaxis={"title": "storage (GB, all replicas, log scale)", "type": "log"},
        yaxis={"title": "nDCG@10"},
        coloraxis={
            "colorscale": "Viridis",
            "colorbar": {"title": "p95 ms" + (f"<br>(target {latency_limit:g})" if latency_limit else "")},
        },
        legend={"orientation": "h", "y": -0.2},
        template="plotly_white",
        margin={"t": 30},
    )
    return figure


def _quality_floor(frame: pd.DataFrame, targets: dict) -> float | None:
    """The nDCG@10 floor a target implies: min_ndcg, or min_retention x the full-width nDCG@10."""
    floors = []
    if targets.get("min_ndcg") is not None:
        floors.append(float(targets["min_ndcg"]))
    if targets.get("min_retention") is not None:
        pairs = frame.dropna(subset=["retention"])
        pairs = pairs[pairs["retention"] > 0]
        if not pairs.empty:
            reference = float((pairs["ndcg_at_10"] / pairs["retention"]).median())
            floors.append(float(targets["min_retention"]) * reference)
    return max(floors) if floors else None


def _p95_text(candidate: dict) -> str:
    """A candidate's p95 for a hover: marked projected with its error, and the shards when there are several."""
    value = candidate["p95_ms"]
    if value is None or pd.isna(value):
        return "not measured"
    text = f"{value:.3g} ms"
    projected = candidate.get("latency_projected")
    if projected is not None and not pd.isna(projected) and bool(projected):
        error = candidate.get("latency_error")
        text += f" (projected, error {'unknown' if error is None or pd.isna(error) else f'{error:.0%}'})"
    shards = candidate.get("shards")
    if shards is not None and not pd.isna(shards) and shards > 1:
        text += f", {int(shards):,} shards"
    return text


def capacity_projection(
    configs: list[dict],
    latency: pd.DataFrame,
    funnels: pd.DataFrame,
    corpus_sizes,
    *,
    deployment: Deployment = Deployment(),
    dataset_fingerprint: str | None = None,
    model: str | None = None,
    machine: Machine | None = None,
):
    """Storage and p95 latency of configurations as the corpus grows: two panels over corpus size (log-log).

    Storage comes from the cost model (``mrl_core.cost``); latency from ``cost.latency_at`` over each
    configuration's measured rows, matched as the planner matches them (``planner.latency_rows_for``):
    measured sizes are drawn as markers, projections as a dashed line.

    Args:
        configs: planner candidates (``recommendation_`` or rows of ``candidates_``) with label, kind,
            stages, width, precision, index_type.
        latency: the store's ``latency`` rows; funnels: its ``funnels`` rows.
        corpus_sizes: the sizes to draw.
        deployment: where the configurations are deployed (vendor, replicas, index parameters, where a
            funnel rescores), as given to ``WidthPlanner``.
        dataset_fingerprint, model: keep only funnel rows measured on this dataset and model (the
            planner's ``context_``); None keeps every dataset's and model's.
        machine: when given, a size that does not fit one machine is split into shards as the planner splits
            it, and its latency is one shard's plus the merge (``cost.sharded_latency_at``); sizes no plan
            fits are left out of the latency panel. None: one machine at every size.

    Returns:
        A plotly ``Figure``.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from mrl_core.cost import estimate_funnel_storage, estimate_storage, latency_at, plan_shards, sharded_latency_at
    from mrl_core.planner import latency_rows_for

    sizes = sorted(int(size) for size in corpus_sizes)
    figure = make_subplots(rows=1, cols=2, subplot_titles=("storage (GB)", "p95 latency (ms)"), horizontal_spacing=0.1)
    colours = ("#2F6FDE", "#9aa0a6", "#d62728", "#2ca02c")
    for number, config in enumerate(configs):
        colour = colours[number % len(colours)]
        storage_gb, estimates = [], []
        for size in sizes:
            if config.get("kind") == "funnel":
                estimate = estimate_funnel_storage(size, config["stages"], deployment)
            else:
                estimate = estimate_storage(
                    size, int(config["width"]), config["precision"], config["index_type"], deployment
                )
            storage_gb.append(estimate.storage_gb)
            estimates.append(estimate)
        figure.add_trace(
            go.Scatter(x=sizes, y=storage_gb, mode="lines", name=config["label"], legendgroup=config["label"],
                       line={"color": colour}, hovertemplate="%{x:,} vectors<br>%{y:.3g} GB<extra></extra>"),
            row=1, col=1,
        )
        rows = latency_rows_for(config, latency, funnels, dataset_fingerprint=dataset_fingerprint, model=model)
        if rows.empty:
            continue
        if machine is None:
            projected = [(size, latency_at(rows, size)) for size in sizes]
        else:
            projected = []
            for size, estimate in zip(sizes, estimates):
                try:
                    projected.append((size, sharded_latency_at(rows, plan_shards(estimate, size, machine))))
                except ValueError:
                    continue
        projected = [(size, estimate) for size, estimate in projected if estimate.p95_ms is not None]
        if projected:
            figure.add_trace(
                go.Scatter(
                    x=[size for size, _ in projected], y=[estimate.p95_ms for _, estimate in projected], mode="lines",
                    name=f"{config['label']} (projected)", legendgroup=config["label"], showlegend=False,
                    line={"color": colour, "dash": "dash"}, customdata=[estimate.basis for _, estimate in projected],
                    hovertemplate="%{x:,} vectors<br>p95 %{y:.3g} ms<br>%{customdata}<extra></extra>",
                ),
                row=1, col=2,
            )
        figure.add_trace(
            go.Scatter(
                x=rows["corpus_size"], y=rows["p95_ms"], mode="markers", name=f"{config['label']} (measured)",
                legendgroup=config["label"], showlegend=False, marker={"color": colour, "size": 9},
                hovertemplate="measured at %{x:,} vectors<br>p95 %{y:.3g} ms<extra></extra>",
            ),
            row=1, col=2,
        )
    for column in (1, 2):
        figure.update_xaxes(type="log", title_text="corpus size (vectors)", row=1, col=column)
        figure.update_yaxes(type="log", row=1, col=column)
    figure.update_layout(template="plotly_white", legend={"orientation": "h", "y": -0.25}, margin={"t": 40})
    return figure


def funnel_stage_times(result: dict):
    """One live query's time per funnel stage next to exact full-width search, as horizontal bars.

    Args:
        result: ``mrl_core.funnel.live_query`` output (stages, stage_ms, funnel_ms, exact_ms).

    Returns:
        A plotly ``Figure``: one stacked bar for the funnel (a segment per stage) and one for exact search.
    """
    import plotly.graph_objects as go

    colours = ("#2F6FDE", "#6C9BEA", "#A9C4F3", "#D3E1F9")
    figure = go.Figure()
    for number, (stage, stage_ms) in enumerate(zip(result["stages"], result["stage_ms"]), start=1):
        if number > 1:
            action = "rescore"
        elif stage.get("precision", "fp32") in ("fp32", "binary"):
            action = stage["index_type"]
        else:
            action = f"{stage['index_type']} {stage['precision']}"
        name = f"stage {number}: {action} {stage['width']} → keep {stage['shortlist_size']}"
        figure.add_trace(
            go.Bar(
                y=["funnel"], x=[stage_ms], orientation="h", name=name,
                marker={"color": colours[(number - 1) % len(colours)]},
                hovertemplate=f"{name}<br>%{{x:.3f}} ms<extra></extra>",
            )
        )
    figure.add_trace(
        go.Bar(
            y=["exact full width"], x=[result["exact_ms"]], orientation="h", name="exact full-width search",
            marker={"color": "#9aa0a6"}, hovertemplate="exact search<br>%{x:.3f} ms<extra></extra>",
        )
    )
    figure.update_layout(
        barmode="stack",
        xaxis={"title": "median time of one query (ms)"},
        template="plotly_white",
        height=260,
        legend={"orientation": "h", "y": -0.45},
        margin={"t": 20, "b": 20},
    )
    return figure
