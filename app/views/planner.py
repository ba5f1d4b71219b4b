"""Planner: set corpus size, storage, latency and quality targets; get the cheapest configuration that meets them.

Storage comes from the cost model, latency from benchmarks measured on this machine, quality from evaluations
of your data; the page shows why every other candidate fails, the Pareto front, and exports the pick.
"""

import json

import streamlit as st

from app.components import candidates_table, recommendation_card, show_figure, verification_panel
from app.first_start import ensure_first_start
from app.labels import METRIC_LABELS, format_count, headline_metric, model_label
from app.state import results_store
from mrl_core.deployment import USABLE_RAM_FRACTION, VENDORS, Deployment, Machine
from mrl_core.export import export_all
from mrl_core.figures import capacity_projection, pareto_chart, quality_vs_width
from mrl_core.model_widths import full_width
from mrl_core.planner import WidthPlanner, exact_search_comparison
from mrl_core.store import StoreError

# Corpus sizes the slider offers: a log scale from ten thousand to ten billion vectors (past one machine's RAM
# the planner splits the corpus into shards).
CORPUS_SIZES = (
    10_000, 30_000, 100_000, 300_000, 1_000_000, 3_000_000, 10_000_000, 30_000_000, 100_000_000, 300_000_000,
    1_000_000_000, 3_000_000_000, 10_000_000_000,
)

st.title("Plan capacity")
store = results_store()
ensure_first_start(store)

pairs = store.evaluated_pairs()
if not pairs:
    st.warning("The store holds no finished evaluation yet; run one on the Evaluate page.")
    st.stop()

with st.container(border=True):
    st.markdown("**Targets**")
    first_row = st.columns([3, 2, 2])
    with first_row[0]:
        corpus_size = st.select_slider(
            "Corpus size (vectors)", CORPUS_SIZES, value=1_000_000, format_func=format_count,
            key="planner_corpus_size", persist_state="session",
        )
    with first_row[1]:
        max_storage_gb = st.number_input(
            "Storage budget (GB, all replicas)", min_value=0.001, value=1.0, step=0.25, format="%.3f",
            key="planner_storage_gb", persist_state="session",
        )
    with first_row[2]:
        max_p95_ms = st.number_input(
            "p95 latency (ms)", min_value=0.01, value=20.0, step=1.0, key="planner_p95_ms", persist_state="session"
        )
    second_row = st.columns([2, 1, 1, 1, 2])
    with second_row[0]:
        floor_kind = st.segmented_control(
            "Quality floor", ["retention", "ndcg"], default="retention", required=True, key="planner_floor_kind",
            persist_state="session",
            format_func={"retention": "% of full width", "ndcg": "nDCG@10"}.get,
        )
    with second_row[1]:
        if floor_kind == "retention":
            floor = st.number_input(
                "Keep at least (%)", 0.0, 100.0, value=95.0, step=1.0, key="planner_floor_pct", persist_state="session"
            )
        else:
            floor = st.number_input(
                "nDCG@10 at least", 0.0, 1.0, value=0.5, step=0.01, format="%.3f", key="planner_floor_ndcg",
                persist_state="session",
            )
    with second_row[2]:
        replicas = st.number_input(
            "Replicas", min_value=1, max_value=64, value=1, step=1, key="planner_replicas", persist_state="session"
        )
    with second_row[3]:
        vendor = st.selectbox("Vendor", VENDORS, key="planner_vendor", persist_state="session")
    with second_row[4]:
        pair_labels = {pair: f"{pair.dataset} · {pair.model}" for pair in pairs}
        quality_pair = st.selectbox(
            "Quality measured on", list(pair_labels), format_func=pair_labels.get, key="planner_quality_pair",
            persist_state="session",
        )
    try:
        this_machine = Machine.this()
    except ValueError:
        # The OS would not say; a common server size stands in until the user types theirs.
        this_machine = Machine.from_gb(64.0, 1)
    third_row = st.columns([2, 1, 4])
    with third_row[0]:
        machine_ram_gb = st.number_input(
            "Machine RAM (GB)", min_value=0.001, value=round(this_machine.ram_gb, 1), step=8.0, format="%.1f",
            key="planner_machine_ram_gb", persist_state="session",
            help=f"One machine's RAM; default this machine's. The index may fill {USABLE_RAM_FRACTION:.0%} of it, "
            "leaving the rest for the OS, query buffers and ingestion. A corpus that does not fit is split into "
            "shards, one a machine.",
        )
    with third_row[1]:
        machine_cores = st.number_input(
            "Cores", min_value=1, max_value=4096, value=this_machine.cores, step=1, key="planner_machine_cores",
            persist_state="session",
            help="One machine's cores; default this machine's. Kept with the plan: a single query's latency "
            "was measured on one thread.",
        )

dataset_fingerprint, dataset_name, model = quality_pair
try:
    machine = Machine.from_gb(float(machine_ram_gb), int(machine_cores))
except ValueError as error:
    st.error(str(error))
    st.stop()
planner = WidthPlanner(
    int(corpus_size),
    max_storage_gb=float(max_storage_gb),
    max_p95_ms=float(max_p95_ms),
    min_ndcg=float(floor) if floor_kind == "ndcg" else None,
    min_retention=float(floor) / 100 if floor_kind == "retention" else None,
    deployment=Deployment(vendor=vendor, replicas=int(replicas)),
    machine=machine,
)
try:
    planner.fit(store, dataset_fingerprint=dataset_fingerprint, model=model)
except (ValueError, StoreError) as error:
    st.error(str(error))
    st.stop()
for note in planner.notes_:
    st.warning(
        note[0].upper() + note[1:] + ", or use “Benchmark latency at these widths” on the Evaluate page.",
        icon=":material/timer_off:",
    )

recommendation_card(planner)
if planner.recommendation_ is not None:
    verification_panel(store, planner)

st.subheader("Why not the others")
candidates_table(planner.candidates_[~planner.candidates_["feasible"]], key="planner_rejected")

pareto_tab, curves_tab, projection_tab, export_tab = st.tabs(
    ["Pareto front", "Quality vs width", "Growth with corpus size", "Export"]
)
with pareto_tab:
    recommended_label = planner.recommendation_["label"] if planner.recommendation_ else None
    try:
        show_figure(pareto_chart(planner.candidates_, planner.targets(), recommended_label), key="planner_pareto")
    except ValueError as error:
        # Label-free evaluations measure fidelity only, so there is no quality axis to draw.
        st.info(str(error))
    st.caption(
        f"Every candidate at {format_count(corpus_size)} vectors: storage against nDCG@10, p95 latency as colour. "
        "Filled points meet every target, open ones miss at least one; the shaded box meets the storage and quality "
        "targets; the line joins the Pareto-optimal candidates and the star is the recommendation."
    )
with curves_tab:
    # One label per model: the newest evaluation of each, so base, PCA and MRL-trained curves share the chart.
    curves = store.newest_results(dataset_fingerprint, precision="fp32")
    metric = headline_metric(curves)
    curves = curves.assign(label=curves["model"].map(model_label))
    show_figure(quality_vs_width(curves, metric), key="planner_curves")
    st.caption(f"{METRIC_LABELS[metric]} at fp32 on {dataset_name}, every evaluated model and method.")
with projection_tab:
    if planner.recommendation_ is None:
        st.info("No configuration meets the targets, so there is nothing to project.")
    else:
        show_figure(
            capacity_projection(
                exact_search_comparison(planner.candidates_, planner.recommendation_), store.rows("latency"),
                store.rows("funnels"), CORPUS_SIZES, deployment=planner.deployment,
                dataset_fingerprint=planner.context_["dataset_fingerprint"], model=planner.context_["model"],
                machine=planner.machine_,
            ),
            key="planner_projection",
        )
        st.caption(
            "The recommendation against full-width fp32 exact search. Storage from the cost model; latency "
            "measured on this machine at the marked sizes and projected elsewhere (dashed; hover for the basis and "
            f"the projection's held-out error). Past one {planner.machine_.ram_gb:.3g} GB machine the corpus is split "
            "into shards searched in parallel: latency is one shard's plus the merge, without network time."
        )
with export_tab:
    if planner.recommendation_ is None:
        st.info("No configuration meets the targets, so there is nothing to export.")
    else:
        chosen = planner.recommendation_
        with st.spinner("Loading the model…"):
            # 'precomputed' has no encoder to ask: its vectors are as wide as the widest width evaluated on them.
            model_full_width = full_width(model, planner.context_["full_width"])
        exports = export_all(chosen, model_full_width, corpus_size=int(corpus_size), deployment=planner.deployment)
        factory, qdrant = exports["faiss"], exports["qdrant"]
        left, middle, right = st.columns(3)
        left.download_button(
            "Configuration (JSON)", json.dumps(exports["json"], indent=2), file_name="mrl_config.json",
            mime="application/json", icon=":material/download:", key="planner_export_json",
        )
        middle.download_button(
            "FAISS factory string", factory["factory_string"] + "\n", file_name="faiss_factory.txt", mime="text/plain",
            icon=":material/download:", key="planner_export_faiss",
        )
        right.download_button(
            "Qdrant collection + query", json.dumps(qdrant, indent=2), file_name="qdrant.json",
            mime="application/json", icon=":material/download:", key="planner_export_qdrant",
        )
        st.markdown(f"**FAISS**: `{factory['factory']}({factory['dimension']}, \"{factory['factory_string']}\")` "
                    f"on {factory['input']}.")
        if "sharding" in factory:
            st.markdown(f"**{factory['sharding']['shards']:,} FAISS shards**: {factory['sharding']['build']}; "
                        f"{factory['sharding']['search']}.")
        st.markdown("**Qdrant** collection and Query API request:")
        st.code(json.dumps(qdrant, indent=2), language="json", height=320)
