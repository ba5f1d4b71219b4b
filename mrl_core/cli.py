"""Command line: ``python -m mrl_core {evaluate,train,bench,funnel,recommend,first-start,runs,submit,jobs,cancel}``.

With ``--json`` a command prints exactly one JSON object on stdout; progress and messages go to stderr.
``submit COMMAND ...`` runs a long command as a background job (``mrl_core.jobs``); ``jobs`` and ``cancel``
follow and stop it.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

# Choices and defaults come from the modules that own them. These are light (numpy, and FAISS through
# indexes); pandas, DuckDB, torch and sentence-transformers load inside the command that needs them.
from mrl_core.deployment import (
    LOCATIONS,
    VENDORS,
    Deployment,
    Machine,
    this_machine_cores,
    this_machine_ram_bytes,
)
from mrl_core.indexes import BENCH_INDEX_TYPES
from mrl_core.paths import default_store_path
from mrl_core.train import DEFAULT_EVALUATE_WIDTHS, TRAIN_MODES
from mrl_core.widths import METHODS, PRECISIONS


def _int_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _float_list(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _corpus_size(text: str) -> int:
    """--corpus-size: a whole number of vectors, also written 1e9 or 1_000_000; its range is checked by the planner."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or number != int(number):
        raise argparse.ArgumentTypeError(
            f"corpus_size={text!r}: expected a whole number of vectors, e.g. 1000000 or 1e9"
        )
    return int(number)


def _this_machine_text() -> str:
    """This machine's size for --help, or why it is unknown."""
    try:
        return f"this machine's {this_machine_ram_bytes() / 10**9:.3g} GB and {this_machine_cores()} cores"
    except ValueError:
        return "this machine's (its RAM could not be read: give --machine-ram-gb)"


def _width_limits(text: str) -> dict[int, int | None]:
    """'384:100000,128' -> {384: 100000, 128: None}: widths, each with the largest corpus size to build at."""
    limits = {}
    for item in text.split(","):
        width, _, limit = item.strip().partition(":")
        try:
            limits[int(width)] = int(limit) if limit else None
        except ValueError:
            raise argparse.ArgumentTypeError(f"{item!r}: expected WIDTH or WIDTH:ROWS, e.g. 384:100000,128") from None
    return limits


def _str_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


class StderrProgress:
    """Prints 'label: done/total' to stderr at most twice a second."""

    def __init__(self, label: str):
        self.label = label
        self._last_print = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done >= total or now - self._last_print > 0.5:
            self._last_print = now
            print(f"{self.label}: {done}/{total}", file=sys.stderr, flush=True)


def _emit(args: argparse.Namespace, payload: dict, text: str) -> None:
    if args.json:
        print(json.dumps(payload, default=str))
    else:
        print(text)


def _add_common(parser: argparse.ArgumentParser, *, data: bool = True, model: bool = True, store: bool = True) -> None:
    if data:
        parser.add_argument("--data", required=True, help="BEIR folder or .zip, pairs/corpus/embeddings file, or builtin[:quick]")
    if model:
        parser.add_argument("--model", default="base", help="'base', a saved sentence-transformers folder, a saved adaptor, or 'precomputed'")
    if store:
        parser.add_argument("--store", default=None, help=f"DuckDB results file (default {default_store_path()})")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout and nothing else there")


def _store(args: argparse.Namespace):
    from mrl_core.store import ResultStore

    return ResultStore(args.store, job_id=args.job_id)


def check_command(args: argparse.Namespace) -> None:
    """The checks a command makes before any work, on the parsed arguments: the data source and model exist,
    a training output is not already there. Raises the command's own ``DatasetError`` / ``ValueError``;
    ``submit`` calls it so a job with bad input fails before it is queued."""
    from mrl_core.data import check_source
    from mrl_core.models import check_model_spec
    from mrl_core.train import check_output

    if getattr(args, "data", None) is not None:
        check_source(args.data)
    if args.command != "recommend" and getattr(args, "model", None) is not None:
        check_model_spec(args.model)
    if args.command == "train":
        check_output(args.out, args.overwrite)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from mrl_core.data import load_dataset
    from mrl_core.evaluate import run_evaluation

    dataset = load_dataset(args.data)
    run_id, rows = run_evaluation(
        dataset,
        args.model,
        widths=args.widths,
        precisions=args.precisions,
        methods=args.methods,
        store=_store(args),
        progress=args.progress("encoding"),
    )
    lines = [f"run {run_id}: {dataset.name}, model {args.model}"]
    for row in rows:
        metrics = ", ".join(
            f"{key} {row[key]:.4f}" for key in ("ndcg_at_10", "recall_at_100", "fidelity_at_10") if row.get(key) is not None
        )
        lines.append(f"  {row['method']:>6} {row['width']:>4} {row['precision']:<14} {metrics}")
    _emit(args, {"run_id": run_id, "dataset": dataset.summary(), "model": args.model, "results": rows}, "\n".join(lines))
    return 0


def _cmd_recommend(args: argparse.Namespace) -> int:
    from mrl_core.export import export_all
    from mrl_core.planner import WidthPlanner, candidates_records

    deployment = Deployment(vendor=args.vendor, replicas=args.replicas, rescore_location=args.rescore_location)
    machine = Machine.from_gb(args.machine_ram_gb, args.machine_cores)
    planner = WidthPlanner(
        args.corpus_size,
        max_storage_gb=args.max_storage_gb,
        max_ram_gb=args.max_ram_gb,
        max_p95_ms=args.max_p95_ms,
        min_ndcg=args.min_ndcg,
        min_retention=args.min_retention,
        deployment=deployment,
        machine=machine,
        **({} if args.objective is None else {"objective": args.objective}),
    ).fit(_store(args), dataset_fingerprint=args.dataset, model=args.model)
    for note in planner.notes_:
        print(f"note: {note}", file=sys.stderr)
    summary_columns = [
        "label", "storage_gb", "ram_gb", "p95_ms", "latency_projected", "latency_error", "ndcg_at_10", "retention",
        "quality_source", "shards", "machines",
    ]
    rejected = planner.candidates_[~planner.candidates_["feasible"]]
    chosen = planner.recommendation_
    payload = {
        "context": planner.context_,
        "corpus_size": args.corpus_size,
        "vendor": deployment.vendor,
        "replicas": deployment.replicas,
        "machine": {
            **machine.to_dict(),
            "source": "this machine" if args.machine_ram_gb is None and args.machine_cores is None else "given",
        },
        "notes": planner.notes_,
        "targets": planner.targets(),
        "recommendation": chosen,
        "margins": chosen["margins"] if chosen else None,
        "exports": (
            export_all(chosen, planner.context_["full_width"], corpus_size=args.corpus_size, deployment=deployment)
            if chosen else None
        ),
        "rejected": candidates_records(rejected[summary_columns + ["reasons", "misses"]]),
        "frontier": candidates_records(planner.frontier_[summary_columns]),
        "closest": None if planner.closest_ is None else {
            "candidates": candidates_records(planner.closest_["candidates"][summary_columns + ["reasons", "misses"]]),
            "relax": planner.closest_["relax"],
        },
    }
    context = planner.context_
    lines = [
        f"{args.corpus_size:,} vectors, {deployment.vendor} x{deployment.replicas}; "
        f"quality from {context['dataset']}, model {context['model']}"
    ]
    if chosen:
        latency = "no latency target" if chosen["p95_ms"] is None else f"p95 {chosen['p95_ms']:.3g} ms"
        if chosen["latency_projected"]:
            error = chosen["latency_error"]
            latency += f" (projected, error {'unknown' if error is None else f'{error:.0%}'})"
        # A label-free evaluation (plain corpus) measures fidelity, not nDCG.
        quality = "not measured" if chosen["ndcg_at_10"] is None else f"{chosen['ndcg_at_10']:.4f}"
        lines.append(
            f"recommend: {chosen['label']}: {chosen['storage_gb']:.3g} GB, {latency}, nDCG@10 "
            f"{quality} ({chosen['quality_source']})"
        )
        for name, margin in chosen["margins"].items():
            room = "unknown" if margin["margin"] is None else f"{margin['margin']:.4g}"
            lines.append(f"  {name} {margin['target']}: margin {room}")
        lines.append(f"  decided by: {chosen['decided_by']['text']}")
        if chosen["shards"] > 1:
            lines.append(
                f"  sharded: {chosen['shards']:,} shards x {deployment.replicas} replicas = {chosen['machines']:,} "
                f"machines of {machine.ram_gb:.3g} GB, {chosen['per_shard_corpus_size']:,} vectors a shard; "
                f"p95 includes a {chosen['merge_ms']:.3g} ms merge (network not included)"
            )
        lines.append(f"  FAISS: {payload['exports']['faiss']['factory_string']}")
    else:
        lines.append("nothing meets every target; closest:")
        for record in payload["closest"]["candidates"]:
            lines.append(f"  {record['label']}: {'; '.join(record['reasons'])}")
        for item in planner.closest_["relax"]:
            lines.append(f"  {item['text']}")
    lines.append(f"{len(rejected)} of {len(planner.candidates_)} candidates rejected; {len(planner.frontier_)} on the Pareto frontier")
    if args.verify:
        payload["verification"], verification_lines = _verify_recommendation(args, planner)
        lines += verification_lines
    _emit(args, payload, "\n".join(lines))
    return 0 if chosen else 1


def _verify_recommendation(args: argparse.Namespace, planner) -> tuple[dict | None, list[str]]:
    """Build the recommendation at the planned size on this machine and measure it (``mrl_core.verify``)."""
    from mrl_core.verify import check_buildable, verification_embeddings, verification_text, verify_pick

    chosen = planner.recommendation_
    if chosen is None:
        return None, ["verify: nothing to verify, no configuration meets every target"]
    # Refuse a pick that cannot be built before loading and encoding anything.
    check_buildable(chosen, planner.context_["full_width"])
    store = _store(args)
    embeddings = verification_embeddings(store, planner.context_, args.data, args.progress("encoding"))
    verification = verify_pick(
        chosen, embeddings, args.corpus_size, context=planner.context_, store=store,
        progress=args.progress("verifying"),
    )
    return verification, verification_text(verification)


def _cmd_bench(args: argparse.Namespace) -> int:
    from mrl_core.bench import BENCH_WIDTHS, bench_dataset
    from mrl_core.data import load_dataset
    from mrl_core.encode import embed_dataset

    dataset = load_dataset(args.data)
    embeddings = embed_dataset(dataset, args.model, args.progress("encoding"))
    result = bench_dataset(
        dataset,
        embeddings,
        widths=args.widths or BENCH_WIDTHS,
        corpus_sizes=args.corpus_sizes,
        approximate_widths=args.approximate_widths,
        **({} if args.query_count is None else {"query_count": args.query_count}),
        store=_store(args),
        progress=args.progress("bench"),
        index_types=args.index_types,
        precisions=args.precisions,
        batch_size=args.batch_size,
        threads=args.threads,
    )
    lines = [f"run {result.run_id}: {dataset.name}, model {args.model}"]
    for row in result.rows:
        lines.append(
            f"  {row['index_type']:>6} {row['precision']:<14} {row['width']:>4} n={row['corpus_size']:>9,}: "
            f"p50 {row['p50_ms']:.3f} ms, p95 {row['p95_ms']:.3f} ms, {row['queries_per_s']:,.0f} q/s "
            f"(batch {row['batch_size']}), {row['bytes_per_vector']:.1f} B/vector "
            f"(formula {row['formula_bytes_per_vector']:.1f})"
            + (f", recall@10 {row['recall_at_10']:.3f}" if row.get("recall_at_10") is not None else "")
        )
    lines += [f"  skipped: {reason}" for reason in result.skipped]
    payload = {
        "run_id": result.run_id,
        "dataset": dataset.summary(),
        "model": args.model,
        "rows": result.rows,
        "fits": result.fits,
        "skipped": result.skipped,
    }
    _emit(args, payload, "\n".join(lines))
    return 0


def _cmd_funnel(args: argparse.Namespace) -> int:
    from mrl_core.data import load_dataset
    from mrl_core.encode import embed_dataset, encode_query
    from mrl_core.enlarge import check_enlargement_fits, enlarged_corpus, stand_in_check_text, tune_enlarged_funnel
    from mrl_core.funnel import FunnelSearcher, live_query, load_tuned_funnel, tune_funnel, tuned_comparison

    dataset = load_dataset(args.data)
    if args.enlarge is not None and args.enlarge <= dataset.corpus_size:
        raise ValueError(f"--enlarge {args.enlarge}: must be above the {dataset.corpus_size:,} documents of {args.data}")
    embeddings = embed_dataset(dataset, args.model, args.progress("encoding"))
    if args.enlarge is not None:
        check_enlargement_fits(args.enlarge, embeddings.width)
    # Encode first: a model that cannot encode text should fail before minutes of tuning.
    query_vector = None if args.query is None else encode_query(args.model, args.query)
    store = _store(args)
    searcher = FunnelSearcher(embeddings.corpus)
    matching = {"model": args.model, "dataset_fingerprint": dataset.fingerprint, "target_recall": args.target_recall,
                "k": args.k}
    found = None if args.retune else load_tuned_funnel(store, **matching)
    if found is None:
        tune_funnel(
            store, searcher, embeddings, model=args.model, dataset=dataset, target_recall=args.target_recall, k=args.k,
            progress=args.progress("timing funnels"),
        )
    funnel, funnel_run_id = load_tuned_funnel(store, **matching)
    tuned_now = found is None
    if args.enlarge is not None:
        # The same tuning on the corpus enlarged with mixture rows; the real run above is its check's reference.
        found = None if args.retune else load_tuned_funnel(store, **matching, enlarged_to=args.enlarge)
        if found is None:
            tune_enlarged_funnel(
                store, embeddings, model=args.model, dataset=dataset, target_recall=args.target_recall, k=args.k,
                corpus_size=args.enlarge, real_run_id=funnel_run_id, progress=args.progress("timing funnels (enlarged)"),
            )
        funnel, funnel_run_id = load_tuned_funnel(store, **matching, enlarged_to=args.enlarge)
        tuned_now = found is None
    # The tuned pick beside exact search and the fastest standard index (full-width HNSW/IVF) at the target.
    comparison = tuned_comparison(store, funnel_run_id)
    heldout = comparison["heldout"] or {}
    enlargement = comparison["enlargement"]
    # The pick measured on queries the tuner did not see (a single live query's timing is too noisy to judge by).
    measured = {"measured_recall_at_10": heldout.get("recall_at_10"), "measured_speedup": heldout.get("speedup")}
    corpus_size = enlargement["corpus_size"] if enlargement else dataset.corpus_size
    header = (
        f"funnel {funnel.describe()} ({'tuned now' if tuned_now else 'stored'}, run {funnel_run_id}) on {corpus_size:,} rows"
        + (f" ({enlargement['synthetic_rows']:,} of them synthetic distractors)" if enlargement else "")
    )
    lines = [header, f"  tuning (run {funnel_run_id}): {comparison['verdict']}"]
    if heldout:
        lines.append(
            f"  on {heldout['query_count']} queries the tuner did not see: recall@{args.k} {heldout['recall_at_10']:.3f}, "
            f"p50 {heldout['p50_ms']:.3f} ms vs exact {heldout['exact_p50_ms']:.3f} ms, {heldout['speedup']:.2f}x"
        )
    if enlargement:
        lines.append("  stand-in check: " + stand_in_check_text(enlargement["check"]))
    common = {
        "model": args.model, "dataset": dataset.summary(), "corpus_size": corpus_size, "enlargement": enlargement,
        "target_recall": args.target_recall, "k": args.k, "funnel_run_id": funnel_run_id, "tuned_now": tuned_now,
        "funnel": funnel.to_dicts(), "description": funnel.describe(), **measured, "comparison": comparison,
    }
    if query_vector is None:
        _emit(args, common, "\n".join(lines))
        return 0
    if enlargement:
        searcher = FunnelSearcher(enlarged_corpus(embeddings.corpus, args.enlarge)[0])
    answer = live_query(searcher, query_vector, funnel, k=args.k)

    def hits(ids: list[int], scores: list[float]) -> list[dict]:
        return [
            {
                "rank": rank,
                "doc_id": dataset.corpus_ids[row] if row < dataset.corpus_size else None,
                "row": row,
                "synthetic": row >= dataset.corpus_size,
                "text": dataset.corpus_texts[row][:80] if dataset.corpus_texts is not None and row < dataset.corpus_size else None,
                "score": score,
            }
            for rank, (row, score) in enumerate(zip(ids, scores), start=1)
            if row >= 0
        ]

    payload = {
        "query": args.query,
        **common,
        "results": hits(answer["funnel_ids"], answer["funnel_scores"]),
        "exact_results": hits(answer["exact_ids"], answer["exact_scores"]),
        "stage_ms": answer["stage_ms"],
        "funnel_ms": answer["funnel_ms"],
        "exact_ms": answer["exact_ms"],
        "overlap_at_k": answer["overlap_at_k"],
        "speedup": answer["speedup"],
        "threads": answer["threads"],
        "batch_size": 1,
        "faiss_version": answer["faiss_version"],
    }
    lines.insert(
        1,
        f"  funnel {answer['funnel_ms']:.3f} ms (stages {', '.join(f'{ms:.3f}' for ms in answer['stage_ms'])}), "
        f"exact {answer['exact_ms']:.3f} ms, speedup {answer['speedup']:.2f}x, overlap@{args.k} {answer['overlap_at_k']:.2f}",
    )
    for hit in payload["results"]:
        name = f"synthetic row {hit['row']}" if hit["synthetic"] else hit["doc_id"]
        lines.append(f"  {hit['rank']:>2}. {name} {hit['score']:.4f} {hit['text'] or ''}")
    _emit(args, payload, "\n".join(lines))
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from mrl_core.data import load_dataset, split_pairs
    from mrl_core.train import run_training

    dataset = load_dataset(args.data)
    if not dataset.train_pairs and dataset.has_labels and not dataset.is_precomputed:
        # A pairs table: hold out a fixed share of its queries for evaluation, train on the rest (embeddings
        # carry no texts to split: an adaptor learns from their corpus rows).
        dataset = split_pairs(dataset)
    params = {"epochs": args.epochs, "learning_rate": args.learning_rate, "overwrite": args.overwrite}
    if args.mode == "full":
        params.update(
            batch_size=args.batch_size, dim_weights=args.dim_weights, distill_weight=args.distill_weight,
            max_seq_length=args.max_seq_length, device=args.device,
        )
    run_id, summary = run_training(
        dataset,
        args.model,
        mode=args.mode,
        dims=args.dims,
        out=args.out,
        store=_store(args),
        progress=args.progress,
        **{key: value for key, value in params.items() if value is not None},
    )
    scores = ", ".join(f"{width}: {ndcg:.4f}" for width, ndcg in summary["trained_ndcg_at_10"].items())
    _emit(args, {"run_id": run_id, "out": args.out, "summary": summary}, f"run {run_id}: saved {args.out}; nDCG@10 {scores}")
    return 0


def _cmd_first_start(args: argparse.Namespace) -> int:
    from mrl_core.first_start import FIRST_START_SOURCE, measure_first_start, missing_measurements

    store = _store(args)
    missing = missing_measurements(store)
    result = measure_first_start(
        store, missing=missing, step_progress=lambda step: args.progress(step), step_done=lambda step: None,
    )
    payload = {
        "source": FIRST_START_SOURCE,
        "measured": missing,
        "evaluation_run_id": result.evaluation_run_id,
        "bench_run_ids": [bench.run_id for bench in result.benches],
    }
    text = (
        f"first start on {FIRST_START_SOURCE}: measured {', '.join(missing)}; evaluation run "
        f"{result.evaluation_run_id}, bench runs {payload['bench_run_ids']}"
        if missing else "the store already holds an evaluation and a benchmark; nothing to measure"
    )
    _emit(args, payload, text)
    return 0


def check_job(argv: list[str]) -> argparse.Namespace:
    """Parse and check a job's command line as the command itself would, before it is queued.

    Bad arguments exit with argparse's usage message (status 2), exactly as the command does; an unknown
    dataset source or model raises the ``DatasetError`` / ``ValueError`` the command would raise.
    """
    from mrl_core.jobs import JOB_COMMANDS

    # argparse first: an unknown command gets the message `python -m mrl_core` itself gives.
    args = build_parser().parse_args(argv)
    if args.command not in JOB_COMMANDS:
        raise ValueError(f"{args.command}: not a command a job can run; expected one of {', '.join(JOB_COMMANDS)}")
    if args.command == "recommend" and not args.verify:
        raise ValueError("recommend: only `recommend --verify` is long enough to be a job; run it directly")
    check_command(args)
    return args


def submit_job(argv: list[str], *, submitted_by: str | None = None, label: str | None = None, unique: bool = False) -> int:
    """Check a command line as the command itself would (``check_job``), then queue it as a background job
    (``mrl_core.jobs.submit``, which takes the other arguments) in the store its ``--store`` names; return its id."""
    from mrl_core.jobs import submit
    from mrl_core.store import ResultStore

    args = check_job(argv)
    return submit(argv, ResultStore(args.store), submitted_by=submitted_by, label=label, unique=unique)


def _job_record(job: dict) -> dict:
    from mrl_core.jobs import log_tail, progress_text

    fields = [
        "job_id", "command", "args", "label", "status", "phase", "progress_done", "progress_total", "eta_s", "pid",
        "host", "submitted_by", "submitted_at", "started_at", "finished_at", "exit_code", "error", "run_ids",
        "log_path",
    ]
    import pandas as pd

    # Missing numbers and times come back from the store as NaN / NaT: JSON null.
    record = {field: (None if pd.api.types.is_scalar(job.get(field)) and pd.isna(job.get(field)) else job.get(field))
              for field in fields}
    record["progress"] = progress_text(job)
    record["log_tail"] = log_tail(job)
    record["result"] = job.get("result")
    return record


def _job_line(job: dict) -> str:
    from mrl_core.jobs import progress_text

    runs = ", ".join(map(str, job["run_ids"])) or "-"
    return (
        f"{int(job['job_id']):>4}  {job['status']:<10}  {job['label']:<40}  {progress_text(job):<36}  runs {runs}"
    )


def _cmd_submit(args: argparse.Namespace) -> int:
    from mrl_core.jobs import job_log_path

    # --json anywhere asks for submit's own JSON; the job always runs its command with --json.
    argv = [part for part in args.argv if part != "--json"]
    args.json = args.json or len(argv) < len(args.argv)
    job_id = submit_job(argv)
    store = _store(_parse_store_of(argv))
    job = store.get_job(job_id)
    _emit(
        args, _job_record(job),
        f"job {job_id} {job['status']}: {job['label']} (log {job_log_path(store, job_id)}); "
        f"follow it with: python -m mrl_core jobs {job_id} --follow",
    )
    return 0


def _parse_store_of(argv: list[str]) -> argparse.Namespace:
    """The --store a job's command line names (None: the default store)."""
    store = argv[argv.index("--store") + 1] if "--store" in argv[:-1] else None
    return argparse.Namespace(store=store, job_id=None)


def _cmd_jobs(args: argparse.Namespace) -> int:
    from mrl_core.jobs import log_tail, progress_text
    from mrl_core.store import ACTIVE_JOB_STATUSES

    store = _store(args)
    if args.job is None:
        jobs = store.jobs()
        records = [_job_record(job) for job in jobs.to_dict("records")]
        text = "\n".join(_job_line(job) for job in jobs.to_dict("records")) if len(jobs) else "no jobs"
        _emit(args, {"jobs": records}, text)
        return 0
    job = _get_job(store, args.job)
    if args.follow:
        shown = None
        while job["status"] in ACTIVE_JOB_STATUSES:
            line = f"job {args.job} {job['status']}: {progress_text(job)}"
            if line != shown and not args.json:
                print(line, flush=True)
                shown = line
            time.sleep(1.0)
            job = store.get_job(args.job)
    record = _job_record(job)
    lines = [_job_line(job), f"  submitted by {job['submitted_by']}, log {job['log_path']}"]
    if job.get("error"):
        lines.append(f"  error: {job['error']}")
    tail = log_tail(job, 5)
    if tail:
        lines += ["  log:"] + [f"    {line}" for line in tail.splitlines()]
    _emit(args, record, "\n".join(lines))
    return 0 if job["status"] == "finished" or not args.follow else 1


def _get_job(store, job_id: int) -> dict:
    try:
        return store.get_job(job_id)
    except KeyError as error:
        raise ValueError(error.args[0]) from None


def _cmd_cancel(args: argparse.Namespace) -> int:
    from mrl_core.jobs import cancel

    store = _store(args)
    before = _get_job(store, args.job)["status"]
    job = cancel(store, args.job, grace_s=args.grace_s)
    ended_before = before not in ("queued", "running")
    runs = store.list_runs()
    dropped = runs.loc[runs["run_id"].isin(job["run_ids"]) & (runs["status"] == "cancelled"), "run_id"].tolist()
    text = (
        f"job {args.job} had already ended: {job['status']}" if ended_before
        else f"job {args.job} {job['status']}"
        + (f"; its unfinished runs {', '.join(map(str, dropped))} are marked cancelled, their rows dropped" if dropped else "")
    )
    _emit(args, _job_record(job), text)
    return 1 if ended_before else 0


def _cmd_runs(args: argparse.Namespace) -> int:
    runs = _store(args).list_runs(args.kind)
    columns = ["run_id", "kind", "status", "model", "dataset", "corpus_size", "job_id", "started_at", "finished_at"]
    records = runs[columns].to_dict(orient="records")
    _emit(args, {"runs": records}, runs[columns].to_string(index=False) if len(runs) else "no runs")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mrl_core", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    evaluate = commands.add_parser("evaluate", help="quality at every width x precision x method, stored")
    _add_common(evaluate)
    evaluate.add_argument("--widths", type=_int_list, default=list(DEFAULT_EVALUATE_WIDTHS))
    evaluate.add_argument("--precisions", type=_str_list, default=list(PRECISIONS))
    evaluate.add_argument("--methods", type=_str_list, default=list(METHODS))
    evaluate.set_defaults(handler=_cmd_evaluate)

    recommend = commands.add_parser(
        "recommend", help="cheapest width/precision/index/funnel meeting the targets (exit 1 when none does)"
    )
    _add_common(recommend, data=False, model=False)
    recommend.add_argument("--corpus-size", type=_corpus_size, required=True,
                           help="vectors the deployment will hold: 1 to 10**12, written 1000000000 or 1e9")
    recommend.add_argument("--machine-ram-gb", type=float, default=None,
                           help="RAM of one machine, GB (1e9 bytes); a corpus that does not fit is split into shards, "
                                f"one a machine (default: {_this_machine_text()})")
    recommend.add_argument("--machine-cores", type=int, default=None,
                           help=f"cores of one machine, kept with the plan (default: this machine's "
                                f"{this_machine_cores()})")
    recommend.add_argument("--max-storage-gb", type=float, default=None, help="RAM + disk over all replicas, GB (1e9 bytes)")
    recommend.add_argument("--max-ram-gb", type=float, default=None, help="RAM over all replicas, GB")
    recommend.add_argument("--max-p95-ms", type=float, default=None, help="p95 single-query latency, ms")
    recommend.add_argument("--min-ndcg", type=float, default=None, help="nDCG@10 floor on the evaluated dataset")
    recommend.add_argument("--min-retention", type=float, default=None, help="nDCG@10 floor relative to full-width fp32")
    recommend.add_argument("--replicas", type=int, default=Deployment.replicas)
    recommend.add_argument("--vendor", choices=VENDORS, default=Deployment.vendor)
    # No argparse choices: mrl_core.planner owns them and loads pandas and DuckDB (~0.5 s on every command);
    # WidthPlanner.fit refuses an unknown objective with the same exit code 2.
    recommend.add_argument("--objective", default=None,
                           help="how to pick among the candidates that meet every target: one of "
                                "mrl_core.planner.OBJECTIVES (default: WidthPlanner's)")
    recommend.add_argument("--rescore-location", choices=LOCATIONS, default=Deployment.rescore_location,
                           help="where funnels keep the vectors later stages rescore with")
    recommend.add_argument("--dataset", default=None, help="evaluated dataset fingerprint or name (default: newest)")
    recommend.add_argument("--model", default=None, help="evaluated model (default: newest for the dataset)")
    recommend.add_argument("--verify", action="store_true",
                           help="build the recommendation at --corpus-size on this machine (or the largest size that "
                                "fits in memory) from rows matched to the data, and measure latency and recall next "
                                "to the prediction; stored")
    recommend.add_argument("--data", default=None,
                           help="with --verify: the evaluated dataset's source (default: the one its evaluation recorded)")
    recommend.set_defaults(handler=_cmd_recommend)

    bench = commands.add_parser("bench", help="single-query latency, throughput and memory per width x precision x index, stored")
    _add_common(bench)
    bench.add_argument("--corpus-sizes", type=_int_list, default=None,
                       help="sizes to measure at; above the real size the corpus is enlarged with rows drawn from a "
                            "mixture fitted to it (default: 10000,30000,100000,1000000; the 1M size takes a few "
                            "minutes on 2 cores, most of it HNSW and IVF builds)")
    # Default left to run_bench: importing mrl_core.bench (pandas) here would slow every command.
    bench.add_argument("--widths", type=_int_list, default=None, help="default: mrl_core.bench.run_bench's widths")
    bench.add_argument("--index-types", type=_str_list, default=list(BENCH_INDEX_TYPES))
    bench.add_argument("--precisions", type=_str_list, default=list(PRECISIONS),
                       help="each index type is measured at those it holds (mrl_core.indexes.MEASURED_PRECISIONS)")
    bench.add_argument("--query-count", type=int, default=None,
                       help="single queries timed per configuration (default: mrl_core.bench.DATASET_BENCH_QUERY_COUNT)")
    bench.add_argument("--batch-size", type=int, default=64, help="queries per call for throughput")
    bench.add_argument("--threads", type=int, default=1, help="FAISS/BLAS threads (1: a single query's scan uses one)")
    bench.add_argument("--approximate-widths", type=_width_limits, default=None,
                       help="widths HNSW and IVF are built at, each tuned to recall@10 0.99 against exact search; "
                            "WIDTH:ROWS builds it up to ROWS rows only (default: 384:100000,128 where measured)")
    bench.set_defaults(handler=_cmd_bench)

    funnel = commands.add_parser("funnel", help="one query through the auto-tuned funnel and exact search, side by side")
    _add_common(funnel)
    funnel.add_argument("--query", default=None,
                        help="query text (none: tune and store the funnel only, as a background job would)")
    funnel.add_argument("--target-recall", type=float, default=0.99, help="recall@k against exact search the funnel must keep")
    funnel.add_argument("--k", type=int, default=10, help="results")
    funnel.add_argument("--retune", action="store_true", help="tune again even if the store holds a tuned funnel")
    funnel.add_argument("--enlarge", type=_corpus_size, default=None, metavar="ROWS",
                        help="also tune on the corpus enlarged to ROWS with synthetic rows fitted to it (checked "
                             "against the real rows at their own size) and search that")
    funnel.set_defaults(handler=_cmd_funnel)

    train = commands.add_parser("train", help="make an encoder Matryoshka (full fine-tune) or fit a Matryoshka adaptor")
    _add_common(train)
    train.add_argument("--mode", choices=TRAIN_MODES, default="adaptor")
    # Train at every width the evaluation reports by default, so each evaluated prefix was trained for.
    train.add_argument("--dims", type=_int_list, default=list(DEFAULT_EVALUATE_WIDTHS))
    train.add_argument("--epochs", type=int, default=None, help="default: 1 for full, 4 for adaptor")
    train.add_argument("--batch-size", type=int, default=32, help="full mode: pairs per batch (in-batch negatives)")
    train.add_argument("--learning-rate", type=float, default=None, help="default: 2e-5 for full, 1e-3 for adaptor")
    train.add_argument("--dim-weights", type=_float_list, default=None,
                       help="full mode: loss weight per --dims entry, e.g. 1,1,2,4,4,2,1 (default: all 1)")
    train.add_argument("--distill-weight", type=float, default=None,
                       help="full mode: pull each prefix's in-batch scores towards the full width's (default 0)")
    train.add_argument("--max-seq-length", type=int, default=None,
                       help="full mode: truncate training texts to this many tokens (the saved model keeps its own)")
    train.add_argument("--device", default="cpu",
                       help="full mode: PyTorch device to train on (cpu; cuda where a GPU is available)")
    train.add_argument("--out", required=True, help="output folder (full) or .npz file (adaptor)")
    train.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    train.set_defaults(handler=_cmd_train)

    first_start = commands.add_parser(
        "first-start", help="evaluate and benchmark the built-in data where the store lacks it (what the app's first "
        "start runs: about ten minutes on 2 cores, most of it the 1M-row benchmark)"
    )
    _add_common(first_start, data=False, model=False)
    first_start.set_defaults(handler=_cmd_first_start)

    runs = commands.add_parser("runs", help="list the runs in the store")
    _add_common(runs, data=False, model=False)
    runs.add_argument("--kind", choices=["evaluate", "train", "bench", "funnel", "verify"], default=None)
    runs.set_defaults(handler=_cmd_runs)

    submit = commands.add_parser(
        "submit", help="run a command as a background job and print its id at once",
        description="Run COMMAND (evaluate, train, bench, funnel, recommend --verify, first-start) with its own "
        "arguments in a process of its own: it goes on when the terminal or browser tab that started it closes. "
        "At most $MRL_MAX_JOBS jobs run at once (default one per two cores), the rest wait in order. Its "
        "--store picks the store that records it. Bad arguments fail here, before anything is queued.",
    )
    submit.add_argument("--json", action="store_true", help="print one JSON object (the job's record)")
    submit.add_argument("argv", nargs=argparse.REMAINDER, metavar="COMMAND ...", help="the command and its arguments")
    submit.set_defaults(handler=_cmd_submit, store=None)

    jobs = commands.add_parser("jobs", help="list background jobs newest first, or show one (--follow: until it ends)")
    _add_common(jobs, data=False, model=False)
    jobs.add_argument("job", type=int, nargs="?", default=None, metavar="JOB_ID", help="one job")
    jobs.add_argument("--follow", action="store_true", help="print its progress until it ends (exit 1 unless finished)")
    jobs.set_defaults(handler=_cmd_jobs)

    cancel = commands.add_parser(
        "cancel", help="stop a job: SIGTERM, SIGKILL after a grace period; its unfinished runs drop their rows"
    )
    _add_common(cancel, data=False, model=False)
    cancel.add_argument("job", type=int, metavar="JOB_ID")
    cancel.add_argument("--grace-s", type=float, default=10.0, help="seconds between SIGTERM and SIGKILL")
    cancel.set_defaults(handler=_cmd_cancel)

    return parser


def main(argv: list[str] | None = None, *, progress=None, job_id: int | None = None) -> int:
    """Run one command; returns its exit status (2: bad input, with 'error: ...' on stderr).

    Args:
        argv: the command line after ``python -m mrl_core`` (None: ``sys.argv[1:]``).
        progress: makes each phase's ``progress(done, total)`` from its label (default ``StderrProgress``);
            a background job passes one that also records progress in the store.
        job_id: the background job this command runs as, recorded on the runs it stores.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    args.progress = progress or StderrProgress
    args.job_id = job_id
    from mrl_core.data import DatasetError
    from mrl_core.store import StoreError

    try:
        # The same checks a job's submit makes, so both refuse bad input with the same message.
        if args.command not in ("submit", "jobs", "cancel", "runs"):
            check_command(args)
        return args.handler(args)
    except (DatasetError, StoreError, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
