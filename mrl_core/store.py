"""The results store: every run and every measured row, in one DuckDB file.

DuckDB lets one process write a file at a time and no other process open it meanwhile, and the CLI
and the app share the file. So the store never holds a connection: each call opens the file, does one
short transaction and closes it, and a call that meets another process's lock waits and retries.
"""

from __future__ import annotations

import json
import os
import platform
import random
import socket
import time
from contextlib import contextmanager
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple

import duckdb
import numpy as np
import pandas as pd

from mrl_core.paths import default_store_path

SCHEMA = """
CREATE SEQUENCE IF NOT EXISTS run_id_seq START 1;
CREATE TABLE IF NOT EXISTS runs (
    run_id BIGINT PRIMARY KEY DEFAULT nextval('run_id_seq'),
    kind VARCHAR NOT NULL,
    model VARCHAR,
    model_fingerprint VARCHAR,
    dataset VARCHAR,
    dataset_fingerprint VARCHAR,
    corpus_size BIGINT,
    query_count BIGINT,
    params JSON,
    versions JSON,
    threads INTEGER,
    status VARCHAR NOT NULL,
    error VARCHAR,
    summary JSON,
    pid INTEGER,
    host VARCHAR,
    started_at TIMESTAMP,
    finished_at TIMESTAMP
);
CREATE TABLE IF NOT EXISTS results (
    run_id BIGINT NOT NULL,
    method VARCHAR NOT NULL,
    width INTEGER NOT NULL,
    precision VARCHAR NOT NULL,
    ndcg_at_10 DOUBLE,
    recall_at_10 DOUBLE,
    recall_at_100 DOUBLE,
    mrr_at_10 DOUBLE,
    fidelity_at_10 DOUBLE,
    retention DOUBLE,
    search_ms DOUBLE
);
CREATE TABLE IF NOT EXISTS latency (
    run_id BIGINT NOT NULL,
    index_type VARCHAR NOT NULL,
    width INTEGER NOT NULL,
    precision VARCHAR NOT NULL,
    corpus_size BIGINT NOT NULL,
    batch_size INTEGER NOT NULL,
    threads INTEGER,
    faiss_version VARCHAR,
    p50_ms DOUBLE,
    p95_ms DOUBLE,
    queries_per_s DOUBLE,
    bytes_per_vector DOUBLE,
    formula_bytes_per_vector DOUBLE,
    details JSON,
    recall_at_10 DOUBLE
);
-- Stores made before approximate indexes were measured with their recall.
ALTER TABLE latency ADD COLUMN IF NOT EXISTS recall_at_10 DOUBLE;
CREATE TABLE IF NOT EXISTS funnels (
    run_id BIGINT NOT NULL,
    corpus_size BIGINT NOT NULL,
    stages JSON NOT NULL,
    recall_at_10 DOUBLE,
    ndcg_at_10 DOUBLE,
    p50_ms DOUBLE,
    p95_ms DOUBLE,
    exact_p50_ms DOUBLE,
    speedup DOUBLE,
    on_frontier BOOLEAN,
    chosen BOOLEAN,
    details JSON
);
CREATE TABLE IF NOT EXISTS verifications (
    run_id BIGINT NOT NULL,
    planned_corpus_size BIGINT NOT NULL,
    corpus_size BIGINT NOT NULL,
    label VARCHAR NOT NULL,
    kind VARCHAR NOT NULL,
    stages JSON NOT NULL,
    predicted_p50_ms DOUBLE,
    measured_p50_ms DOUBLE,
    predicted_p95_ms DOUBLE,
    measured_p95_ms DOUBLE,
    predicted_recall_at_10 DOUBLE,
    measured_recall_at_10 DOUBLE,
    details JSON
);
"""

TABLE_COLUMNS = {
    "results": [
        "method", "width", "precision", "ndcg_at_10", "recall_at_10", "recall_at_100", "mrr_at_10",
        "fidelity_at_10", "retention", "search_ms",
    ],
    "latency": [
        "index_type", "width", "precision", "corpus_size", "batch_size", "threads", "faiss_version", "p50_ms",
        "p95_ms", "queries_per_s", "bytes_per_vector", "formula_bytes_per_vector", "details", "recall_at_10",
    ],
    "funnels": [
        "corpus_size", "stages", "recall_at_10", "ndcg_at_10", "p50_ms", "p95_ms", "exact_p50_ms", "speedup",
        "on_frontier", "chosen", "details",
    ],
    "verifications": [
        "planned_corpus_size", "corpus_size", "label", "kind", "stages", "predicted_p50_ms", "measured_p50_ms",
        "predicted_p95_ms", "measured_p95_ms", "predicted_recall_at_10", "measured_recall_at_10", "details",
    ],
}
JSON_COLUMNS = {"params", "versions", "summary", "details", "stages"}
LOCK_MESSAGES = ("Could not set lock", "Conflicting lock", "lock on file")


class StoreError(RuntimeError):
    """The store could not be read or written; the message says which file and why."""


class EvaluatedPair(NamedTuple):
    """A dataset and a model with at least one finished evaluation: what the planner can take quality from."""

    dataset_fingerprint: str
    dataset: str
    model: str


def library_versions() -> dict[str, str]:
    """Versions of the libraries whose behaviour shapes a measurement."""
    versions = {"python": platform.python_version()}
    for package in ("mrl_core", "numpy", "torch", "sentence-transformers", "faiss-cpu", "duckdb", "transformers"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    if "mrl_core" not in versions:
        from mrl_core import __version__

        versions["mrl_core"] = __version__
    return versions


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ResultStore:
    """Runs and their rows in one DuckDB file, safe to share between processes.

    Args:
        path: the DuckDB file; created with its schema on first write.
        lock_timeout_s: how long a call waits for another process's lock before it fails.
    """

    def __init__(self, path: str | os.PathLike | None = None, lock_timeout_s: float = 60.0):
        self.path = Path(path) if path is not None else default_store_path()
        self.lock_timeout_s = lock_timeout_s
        self._schema_ready = False

    # -- connection handling -------------------------------------------------------------------
    @contextmanager
    def _connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.lock_timeout_s
        delay_s = 0.02
        while True:
            try:
                connection = duckdb.connect(str(self.path))
                break
            except duckdb.Error as error:
                if not any(message in str(error) for message in LOCK_MESSAGES):
                    raise StoreError(f"{self.path}: cannot open the results store: {error}") from error
                if time.monotonic() > deadline:
                    raise StoreError(
                        f"{self.path}: another process has held the results store for over "
                        f"{self.lock_timeout_s:.0f} s; try again when it finishes ({error})"
                    ) from error
                time.sleep(delay_s * (1 + random.random()))
                delay_s = min(delay_s * 2, 0.5)
        try:
            if not self._schema_ready:
                connection.execute(SCHEMA)
                self._schema_ready = True
            yield connection
        finally:
            connection.close()

    def _query(self, sql: str, parameters: list | None = None) -> pd.DataFrame:
        with self._connect() as connection:
            frame = connection.execute(sql, parameters or []).df()
        for column in JSON_COLUMNS & set(frame.columns):
            frame[column] = frame[column].map(lambda value: json.loads(value) if isinstance(value, str) else value)
        return frame

    # -- writes ----------------------------------------------------------------------------------
    def start_run(
        self,
        kind: str,
        *,
        model: str | None = None,
        model_fingerprint: str | None = None,
        dataset: str | None = None,
        dataset_fingerprint: str | None = None,
        corpus_size: int | None = None,
        query_count: int | None = None,
        params: dict | None = None,
        threads: int | None = None,
    ) -> int:
        """Record a run as 'running' and return its id."""
        with self._connect() as connection:
            row = connection.execute(
                """INSERT INTO runs (kind, model, model_fingerprint, dataset, dataset_fingerprint, corpus_size,
                       query_count, params, versions, threads, status, pid, host, started_at)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'running', ?, ?, ?) RETURNING run_id""",
                [
                    kind, model, model_fingerprint, dataset, dataset_fingerprint, corpus_size, query_count,
                    json.dumps(params or {}), json.dumps(library_versions()), threads, os.getpid(),
                    socket.gethostname(), datetime.now(),
                ],
            ).fetchone()
        return int(row[0])

    def add_rows(self, table: str, run_id: int, rows: list[dict]) -> None:
        """Append measured rows to ``results``, ``latency``, ``funnels`` or ``verifications`` in one transaction."""
        if table not in TABLE_COLUMNS:
            raise ValueError(f"table={table!r}: expected one of {sorted(TABLE_COLUMNS)}")
        columns = TABLE_COLUMNS[table]
        for index, row in enumerate(rows):
            unknown = set(row) - set(columns)
            if unknown:
                raise ValueError(f"{table} row {index}: unknown fields {sorted(unknown)}; allowed: {columns}")
        values = [
            [run_id] + [json.dumps(row.get(c)) if c in JSON_COLUMNS and row.get(c) is not None else row.get(c) for c in columns]
            for row in rows
        ]
        if not values:
            return
        placeholders = ", ".join("?" * (len(columns) + 1))
        with self._connect() as connection:
            connection.execute("BEGIN")
            connection.executemany(
                f"INSERT INTO {table} (run_id, {', '.join(columns)}) VALUES ({placeholders})", values
            )
            connection.execute("COMMIT")

    def finish_run(self, run_id: int, *, status: str = "finished", summary: dict | None = None, error: str | None = None) -> None:
        """Mark a run finished (or failed) with an optional summary."""
        with self._connect() as connection:
            connection.execute(
                "UPDATE runs SET status = ?, summary = ?, error = ?, finished_at = ? WHERE run_id = ?",
                [status, json.dumps(summary) if summary is not None else None, error, datetime.now(), run_id],
            )

    @contextmanager
    def run(self, kind: str, **run_fields) -> Iterator[int]:
        """Start a run, yield its id, and mark it finished, or failed with the error, when the block ends."""
        run_id = self.start_run(kind, **run_fields)
        try:
            yield run_id
        except BaseException as error:
            self.finish_run(run_id, status="failed", error=f"{type(error).__name__}: {error}")
            raise
        if self.get_run(run_id)["status"] == "running":
            self.finish_run(run_id)

    def delete_run(self, run_id: int) -> None:
        """Remove a run and every row it produced."""
        with self._connect() as connection:
            connection.execute("BEGIN")
            for table in TABLE_COLUMNS:
                connection.execute(f"DELETE FROM {table} WHERE run_id = ?", [run_id])
            connection.execute("DELETE FROM runs WHERE run_id = ?", [run_id])
            connection.execute("COMMIT")

    # -- reads ---------------------------------------------------------------------------------
    def list_runs(self, kind: str | None = None) -> pd.DataFrame:
        """All runs, newest first; a 'running' run whose process is gone reads as 'unfinished'."""
        sql = "SELECT * FROM runs" + (" WHERE kind = ?" if kind else "") + " ORDER BY run_id DESC"
        runs = self._query(sql, [kind] if kind else None)
        if len(runs):
            this_host = socket.gethostname()
            dead = (runs["status"] == "running") & runs.apply(
                lambda run: run["host"] == this_host and not _pid_alive(run["pid"]), axis=1
            )
            runs.loc[dead, "status"] = "unfinished"
        return runs

    def get_run(self, run_id: int) -> dict:
        """One run as a dict; KeyError when there is none with that id."""
        runs = self._query("SELECT * FROM runs WHERE run_id = ?", [run_id])
        if runs.empty:
            raise KeyError(f"no run {run_id} in {self.path}")
        return runs.iloc[0].to_dict()

    def rows(self, table: str, run_ids: int | list[int] | None = None) -> pd.DataFrame:
        """Rows of ``results``, ``latency``, ``funnels`` or ``verifications``, joined with their run's model and dataset."""
        return self._rows(table, run_ids)

    def _rows(
        self, table: str, run_ids: int | Iterable[int] | None = None, *, newest_per: list[str] | None = None,
        **equal_to,
    ) -> pd.DataFrame:
        """``rows`` narrowed to columns equal to the given values (None: any); with ``newest_per``, only the
        row of the newest run for each combination of those columns."""
        if table not in TABLE_COLUMNS:
            raise ValueError(f"table={table!r}: expected one of {sorted(TABLE_COLUMNS)}")
        sql = (
            f"SELECT t.*, r.kind, r.model, r.model_fingerprint, r.dataset, r.dataset_fingerprint, "
            f"r.status, r.started_at FROM {table} t JOIN runs r USING (run_id)"
        )
        conditions, parameters = [], []
        if run_ids is not None:
            ids = [run_ids] if isinstance(run_ids, (int, np.integer)) else [int(run_id) for run_id in run_ids]
            if not ids:
                return self._query(sql + " WHERE false")
            conditions.append(f"run_id IN ({', '.join('?' * len(ids))})")
            parameters += [int(run_id) for run_id in ids]
        for column, value in equal_to.items():
            if value is not None:
                conditions.append(f"{column} = ?")
                parameters.append(value)
        if conditions:
            sql += " WHERE " + " AND ".join(conditions)
        if newest_per:
            sql += f" QUALIFY row_number() OVER (PARTITION BY {', '.join(newest_per)} ORDER BY run_id DESC) = 1"
        return self._query(sql + " ORDER BY run_id, t.rowid", parameters)

    def results(
        self, run_ids: int | Iterable[int] | None = None, *, method: str | None = None, precision: str | None = None
    ) -> pd.DataFrame:
        """Per-width evaluation rows of the given runs (all runs when None), optionally of one method or precision."""
        return self._rows("results", run_ids, method=method, precision=precision)

    def newest_results(self, dataset_fingerprint: str, *, precision: str | None = None) -> pd.DataFrame:
        """A dataset's finished evaluation rows, the newest run's row for each model, method, width and precision.

        Re-running an evaluation replaces the older measurement, and every model evaluated on the dataset
        keeps its own rows, so base, PCA and MRL-trained curves can share one chart.
        """
        return self._rows(
            "results", dataset_fingerprint=dataset_fingerprint, precision=precision, status="finished",
            newest_per=["model", "method", "width", "precision"],
        )

    def evaluated_pairs(self) -> list[EvaluatedPair]:
        """Each (dataset, model) with a finished evaluation that stored rows, newest evaluation first.

        A dataset is named by its newest evaluation (the same content may have been loaded under two names).
        """
        pairs = self._query(
            """SELECT dataset_fingerprint, arg_max(dataset, run_id) AS dataset, model
               FROM runs WHERE status = 'finished' AND run_id IN (SELECT run_id FROM results)
               GROUP BY dataset_fingerprint, model ORDER BY max(run_id) DESC"""
        )
        return [EvaluatedPair(*(str(value) for value in pair)) for pair in pairs.itertuples(index=False)]

    def widths_without_latency(self, widths: Iterable[int]) -> list[int]:
        """Those of ``widths`` no finished benchmark has measured (at any index, precision or size), widest first."""
        measured = self._query("SELECT DISTINCT width FROM latency JOIN runs USING (run_id) WHERE status = 'finished'")
        return sorted({int(width) for width in widths} - {int(width) for width in measured["width"]}, reverse=True)

    def runs_with_results(self) -> pd.DataFrame:
        """``list_runs()`` narrowed to the runs that stored evaluation rows (what can be drawn as a curve)."""
        runs = self.list_runs()
        with_results = set(self._query("SELECT DISTINCT run_id FROM results")["run_id"])
        return runs[runs["run_id"].isin(with_results)]

    def trained_models(self) -> list[dict]:
        """Models saved by finished ``train`` runs that are still on disk, newest first, one per saved path.

        Returns:
            [{"model": the saved model's spec (its path), "run_id": the train run, "base_model": the spec it
            was trained from}].
        """
        models = {}
        for run in self.list_runs("train").to_dict("records"):
            spec = (run["params"] or {}).get("out")
            if run["status"] == "finished" and spec and spec not in models and Path(spec).exists():
                models[spec] = {"model": spec, "run_id": int(run["run_id"]), "base_model": run["model"]}
        return list(models.values())

    def latest_run(self, kind: str, *, model: str | None = None, dataset_fingerprint: str | None = None) -> dict | None:
        """The newest finished run of a kind, optionally for one model and dataset."""
        sql = "SELECT * FROM runs WHERE kind = ? AND status = 'finished'"
        parameters: list = [kind]
        if model is not None:
            sql += " AND model = ?"
            parameters.append(model)
        if dataset_fingerprint is not None:
            sql += " AND dataset_fingerprint = ?"
            parameters.append(dataset_fingerprint)
        runs = self._query(sql + " ORDER BY run_id DESC LIMIT 1", parameters)
        return None if runs.empty else runs.iloc[0].to_dict()
