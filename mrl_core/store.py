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
import psutil

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
-- The background job (mrl_core.jobs) a run was produced by; NULL for a command run in the foreground.
ALTER TABLE runs ADD COLUMN IF NOT EXISTS job_id BIGINT;
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
CREATE SEQUENCE IF NOT EXISTS job_id_seq START 1;
CREATE TABLE IF NOT EXISTS jobs (
    job_id BIGINT PRIMARY KEY DEFAULT nextval('job_id_seq'),
    command VARCHAR NOT NULL,
    args JSON NOT NULL,
    label VARCHAR,
    status VARCHAR NOT NULL,
    phase VARCHAR,
    progress_done BIGINT,
    progress_total BIGINT,
    eta_s DOUBLE,
    log_path VARCHAR,
    log_tail VARCHAR,
    pid INTEGER,
    pid_started DOUBLE,
    host VARCHAR,
    submitted_by VARCHAR,
    submitted_at TIMESTAMP,
    started_at TIMESTAMP,
    finished_at TIMESTAMP,
    updated_at TIMESTAMP,
    exit_code INTEGER,
    error VARCHAR,
    result JSON
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
JSON_COLUMNS = {"params", "versions", "summary", "details", "stages", "args", "result"}
LOCK_MESSAGES = ("Could not set lock", "Conflicting lock", "lock on file")


class StoreError(RuntimeError):
    """The store could not be read or written; the message says which file and why."""


class RunCancelled(BaseException):
    """Raised in a job's process when the job is cancelled (``mrl_core.jobs``): ``ResultStore.run`` then
    drops the run's rows and marks it 'cancelled'. A BaseException, so ``except Exception`` does not swallow it."""


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


def process_alive(pid: int | None, started: float | None = None) -> bool:
    """Whether process ``pid`` on this host still runs: not a zombie, and, when ``started`` (its creation
    time, ``psutil.Process.create_time()``) is given, not a later process that reused the id."""
    if not pid:
        return False
    try:
        process = psutil.Process(int(pid))
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        return started is None or abs(process.create_time() - float(started)) < 1.0
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


JOB_STATUSES = ("queued", "running", "finished", "failed", "cancelled", "unfinished")
"""A job's life: queued, then running, then one of the last four ('unfinished': its process vanished)."""
ACTIVE_JOB_STATUSES = ("queued", "running")
JOB_FIELDS = {
    "label", "status", "phase", "progress_done", "progress_total", "eta_s", "log_path", "log_tail", "pid",
    "pid_started", "host", "started_at", "finished_at", "exit_code", "error", "result",
}
# A job's process records its pid right after it is spawned; until then it is 'starting', not gone.
JOB_START_GRACE_S = 60.0


class ResultStore:
    """Runs and their rows in one DuckDB file, safe to share between processes.

    Args:
        path: the DuckDB file; created with its schema on first write.
        lock_timeout_s: how long a call waits for another process's lock before it fails.
        job_id: the background job (``mrl_core.jobs``) this process runs, recorded on every run it starts.
    """

    def __init__(self, path: str | os.PathLike | None = None, lock_timeout_s: float = 60.0, job_id: int | None = None):
        self.path = Path(path) if path is not None else default_store_path()
        self.lock_timeout_s = lock_timeout_s
        self.job_id = job_id
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
        return self._decoded(frame)

    @staticmethod
    def _decoded(frame: pd.DataFrame) -> pd.DataFrame:
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
                       query_count, params, versions, threads, status, pid, host, started_at, job_id)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'running', ?, ?, ?, ?) RETURNING run_id""",
                [
                    kind, model, model_fingerprint, dataset, dataset_fingerprint, corpus_size, query_count,
                    json.dumps(params or {}), json.dumps(library_versions()), threads, os.getpid(),
                    socket.gethostname(), datetime.now(), self.job_id,
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

    def cancel_runs(self, run_ids: Iterable[int]) -> None:
        """Drop the rows of unfinished runs and mark them 'cancelled', in one transaction (a cancelled run
        leaves no half-written rows behind; its record stays in the history)."""
        ids = [int(run_id) for run_id in run_ids]
        if not ids:
            return
        marks = ", ".join("?" * len(ids))
        with self._connect() as connection:
            connection.execute("BEGIN")
            for table in TABLE_COLUMNS:
                connection.execute(f"DELETE FROM {table} WHERE run_id IN ({marks})", ids)
            connection.execute(
                f"UPDATE runs SET status = 'cancelled', finished_at = ? WHERE run_id IN ({marks}) "
                "AND status NOT IN ('finished', 'failed')",
                [datetime.now(), *ids],
            )
            connection.execute("COMMIT")

    @contextmanager
    def run(self, kind: str, **run_fields) -> Iterator[int]:
        """Start a run, yield its id, and mark it finished, or failed with the error, when the block ends
        (cancelled, its rows dropped, when the block ends with ``RunCancelled``)."""
        run_id = self.start_run(kind, **run_fields)
        try:
            yield run_id
        except RunCancelled:
            self.cancel_runs([run_id])
            raise
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
                lambda run: run["host"] == this_host and not process_alive(run["pid"]), axis=1
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

    # -- background jobs (mrl_core.jobs runs them; these are their records) -----------------------
    def add_job(self, command: str, args: list[str], *, label: str | None = None, submitted_by: str | None = None) -> int:
        """Record a job as 'queued' and return its id."""
        with self._connect() as connection:
            row = connection.execute(
                """INSERT INTO jobs (command, args, label, status, host, submitted_by, submitted_at, updated_at)
                   VALUES (?, ?, ?, 'queued', ?, ?, ?, ?) RETURNING job_id""",
                [command, json.dumps(args), label, socket.gethostname(), submitted_by, datetime.now(), datetime.now()],
            ).fetchone()
        return int(row[0])

    def update_job(self, job_id: int, **fields) -> None:
        """Set fields of a job's record (``JOB_FIELDS``); ``result`` is stored as JSON."""
        unknown = set(fields) - JOB_FIELDS
        if unknown:
            raise ValueError(f"job fields {sorted(unknown)}: expected some of {sorted(JOB_FIELDS)}")
        names = list(fields) + ["updated_at"]
        values = [json.dumps(value, default=str) if name == "result" and value is not None else value
                  for name, value in fields.items()] + [datetime.now()]
        with self._connect() as connection:
            connection.execute(
                f"UPDATE jobs SET {', '.join(f'{name} = ?' for name in names)} WHERE job_id = ?", [*values, int(job_id)]
            )

    def finish_job(self, job_id: int, status: str, **fields) -> None:
        """End a job that is still queued or running, or read 'unfinished' while its process, which is what reports
        here, was in fact alive (a job already finished, failed or cancelled keeps its status)."""
        if status not in JOB_STATUSES[2:]:
            raise ValueError(f"status={status!r}: expected one of {JOB_STATUSES[2:]}")
        values = {"finished_at": datetime.now(), **fields}
        if "result" in values and values["result"] is not None:
            values["result"] = json.dumps(values["result"], default=str)
        names = list(values)
        with self._connect() as connection:
            connection.execute(
                f"UPDATE jobs SET status = ?, updated_at = ?, {', '.join(f'{name} = ?' for name in names)} "
                f"WHERE job_id = ? AND status IN {(*ACTIVE_JOB_STATUSES, 'unfinished')}",
                [status, datetime.now(), *values.values(), int(job_id)],
            )

    def claim_job(self, job_id: int, max_running: int, *, pid: int, pid_started: float | None) -> str:
        """Start a queued job when it is first in line and fewer than ``max_running`` jobs run.

        One transaction: the job's process records itself (``pid``, its creation time), then jobs whose process
        is gone are marked 'unfinished', so they hold no slot.

        Returns:
            'running' when the job may start now, 'queued' when it must wait, or its final status when it
            ended meanwhile (cancelled while queued).
        """
        with self._connect() as connection:
            connection.execute("BEGIN")
            connection.execute(
                "UPDATE jobs SET pid = ?, pid_started = ? WHERE job_id = ? AND pid IS DISTINCT FROM ?",
                [int(pid), pid_started, int(job_id), int(pid)],
            )
            self._mark_vanished_jobs(connection)
            status = connection.execute("SELECT status FROM jobs WHERE job_id = ?", [int(job_id)]).fetchone()
            if status is None:
                connection.execute("ROLLBACK")
                raise KeyError(f"no job {job_id} in {self.path}")
            if status[0] != "queued":
                connection.execute("COMMIT")
                return str(status[0])
            running, first = connection.execute(
                "SELECT count(*) FILTER (WHERE status = 'running'), min(job_id) FILTER (WHERE status = 'queued') FROM jobs"
            ).fetchone()
            if running >= max_running or first != int(job_id):
                connection.execute("COMMIT")
                return "queued"
            connection.execute(
                "UPDATE jobs SET status = 'running', started_at = ?, updated_at = ? WHERE job_id = ?",
                [datetime.now(), datetime.now(), int(job_id)],
            )
            connection.execute("COMMIT")
        return "running"

    def _mark_vanished_jobs(self, connection: duckdb.DuckDBPyConnection) -> None:
        """Mark queued or running jobs of this host whose process is gone as 'unfinished' (and their running runs)."""
        active = connection.execute(
            f"SELECT job_id, pid, pid_started, submitted_at FROM jobs WHERE status IN {ACTIVE_JOB_STATUSES} AND host = ?",
            [socket.gethostname()],
        ).fetchall()
        now = datetime.now()
        vanished = [
            job_id for job_id, pid, started, submitted_at in active
            if (pid is None and (now - submitted_at).total_seconds() > JOB_START_GRACE_S)
            or (pid is not None and not process_alive(pid, started))
        ]
        for job_id in vanished:
            connection.execute(
                "UPDATE jobs SET status = 'unfinished', finished_at = ?, updated_at = ?, "
                "error = coalesce(error, 'its process ended without reporting (killed, or the machine restarted)') "
                f"WHERE job_id = ? AND status IN {ACTIVE_JOB_STATUSES}",
                [now, now, job_id],
            )

    def jobs(self, job_ids: Iterable[int] | None = None, *, statuses: Iterable[str] | None = None) -> pd.DataFrame:
        """Jobs newest first (a job whose process vanished is marked 'unfinished' first), each with the ids of
        the runs it produced (``run_ids``)."""
        sql = (
            "SELECT j.*, coalesce(list(r.run_id ORDER BY r.run_id) FILTER (WHERE r.run_id IS NOT NULL), []) AS run_ids "
            "FROM jobs j LEFT JOIN runs r USING (job_id)"
        )
        conditions, parameters = [], []
        if job_ids is not None:
            ids = [int(job_id) for job_id in job_ids]
            if not ids:
                conditions.append("false")
            else:
                conditions.append(f"j.job_id IN ({', '.join('?' * len(ids))})")
                parameters += ids
        if statuses is not None:
            wanted = list(statuses)
            conditions.append(f"j.status IN ({', '.join('?' * len(wanted))})" if wanted else "false")
            parameters += wanted
        if conditions:
            sql += " WHERE " + " AND ".join(conditions)
        # One open of the file for both (an app polling every few seconds competes with running jobs for it).
        with self._connect() as connection:
            connection.execute("BEGIN")
            self._mark_vanished_jobs(connection)
            connection.execute("COMMIT")
            frame = self._decoded(connection.execute(sql + " GROUP BY ALL ORDER BY j.job_id DESC", parameters).df())
        frame["run_ids"] = frame["run_ids"].map(lambda ids: [int(run_id) for run_id in ids])
        # Missing values read as None, not NaN / NA / NaT, so a record's fields can be tested for truth.
        return frame.astype(object).where(frame.notna(), None)

    def get_job(self, job_id: int) -> dict:
        """One job as a dict; KeyError when there is none with that id."""
        jobs = self.jobs([job_id])
        if jobs.empty:
            raise KeyError(f"no job {job_id} in {self.path}")
        return jobs.iloc[0].to_dict()

