"""MLflow tracking of a training run: flattened params, per-iteration metrics, artifacts.

Tracking never stops training: a store that is unreachable at the start is a one-line error
before anything is built (:func:`require_tracking_server`); one that fails mid-run is reported
once, the metrics go on into a local buffer file, and the buffer is sent when the run ends (or,
if the store still fails then, into a local fallback store).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sqlite3
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunStatus
from mlflow.tracking._tracking_service import utils as mlflow_tracking_utils

from diffrl.training.run_directory import RunDirectory

logger = logging.getLogger("diffrl.training")


def flatten_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested mapping → ``{"a.b.c": "value"}`` (MLflow params are flat strings)."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_config(value, prefix=f"{name}."))
        else:
            flat[name] = str(value)
    return flat


# MLflow's own HTTP defaults retry for about 4 minutes per request; a training loop cannot wait that long.
_SHORT_HTTP_RETRIES = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}


@contextlib.contextmanager
def _short_http_retries() -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in _SHORT_HTTP_RETRIES}
    os.environ.update(_SHORT_HTTP_RETRIES)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def require_tracking_server(tracking_uri: str, timeout: float = 15.0) -> None:
    """A :class:`ValueError` within ``timeout`` seconds if the tracking store cannot be used.

    ``http(s)://``: the MLflow server's ``/health`` must answer; ``sqlite:///``: the database's
    directory must exist. Other schemes are left to MLflow.
    """
    if tracking_uri.startswith(("http://", "https://")):
        deadline, reason = time.monotonic() + timeout, ""
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{tracking_uri.rstrip('/')}/health", timeout=min(5.0, timeout)):
                    return
            except (urllib.error.URLError, OSError) as error:
                reason = str(getattr(error, "reason", error))
                time.sleep(1.0)
        raise ValueError(
            f"logger.tracking_uri={tracking_uri}: no MLflow server answered within {timeout:.0f} s ({reason}); "
            "start it (mlflow server ...) or leave logger.tracking_uri unset to track into the run directory"
        )
    if tracking_uri.startswith("sqlite:///"):
        database = Path(tracking_uri.removeprefix("sqlite:///"))
        if not database.parent.is_dir():
            raise ValueError(
                f"logger.tracking_uri={tracking_uri}: the directory {database.parent} does not exist "
                "(sqlite:////abs/path/mlflow.db for an absolute path)"
            )


def default_tracking_uri(run_dir: str | Path) -> str:
    """An embedded sqlite store inside the run directory (MLflow 3 refuses plain file stores)."""
    return f"sqlite:///{RunDirectory(run_dir).mlflow_db.resolve()}"


# The columns in which MLflow's sqlite store keeps absolute artifact paths.
_ARTIFACT_COLUMNS = (
    ("experiments", "artifact_location"),
    ("runs", "artifact_uri"),
    ("logged_models", "artifact_location"),
)


def write_run_info(layout: RunDirectory, run_id: str, tracking_uri: str) -> None:
    """Record the run's MLflow run and store in ``run.json`` (atomically), with the directory it was written
    in, so that a moved or copied run directory is recognized (:func:`recorded_run`)."""
    info = {"mlflow_run_id": run_id, "tracking_uri": tracking_uri, "run_dir": str(layout.root.resolve())}
    partial = layout.run_info.with_name(f".{layout.run_info.name}.partial")
    partial.write_text(json.dumps(info))
    partial.replace(layout.run_info)


def recorded_run(layout: RunDirectory) -> tuple[str, str] | None:
    """``(tracking_uri, mlflow_run_id)`` of the training run ``run.json`` records (``None`` without one).

    A run tracked into its directory's own store (the default) stays self-contained when the directory
    is moved or copied: the store used is the one the directory now holds, and the absolute artifact
    paths MLflow keeps inside it are rewritten from the old location to the new one (that store belongs
    to this directory alone; a copy leaves the original's untouched). A run tracked elsewhere keeps its
    store. ``run.json`` files from before the ``run_dir`` entry are read by where their store sat.
    """
    if not layout.run_info.exists():
        return None
    try:
        info = json.loads(layout.run_info.read_text())
        tracking_uri, run_id = info["tracking_uri"], info["mlflow_run_id"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise ValueError(f"{layout.run_info}: unreadable ({error}); it names the run's MLflow run and store") from error
    old_root = _own_store_root(info, layout)
    if old_root is None or old_root == layout.root.resolve():
        return tracking_uri, run_id
    _relocate_artifact_paths(layout, old_root)
    # MLflow caches a run's artifact location per process by run id alone: a run this process logged to
    # before the move would keep writing to the old place.
    getattr(mlflow_tracking_utils, "_artifact_repos_cache", {}).pop(run_id, None)
    tracking_uri = default_tracking_uri(layout.root)
    write_run_info(layout, run_id, tracking_uri)
    logger.info("run directory moved or copied from %s: its MLflow store now points at %s", old_root, layout.root)
    return tracking_uri, run_id


def _own_store_root(info: dict[str, Any], layout: RunDirectory) -> Path | None:
    """Where the run directory was when it wrote ``info``, if its run is tracked into its own store."""
    if "run_dir" in info:
        root = Path(info["run_dir"])
        return root if info["tracking_uri"] == default_tracking_uri(root) else None
    # Older run.json: the store sat at <root>/mlflow.db, and <root> is gone (moved) or the same run's (copied).
    prefix = "sqlite:///"
    if not info["tracking_uri"].startswith(prefix) or not layout.mlflow_db.exists():
        return None
    store = Path(info["tracking_uri"].removeprefix(prefix))
    root = store.parent
    if store.name != layout.mlflow_db.name:
        return None
    original = RunDirectory(root).run_info
    if not root.exists() or (
        original.exists() and json.loads(original.read_text()).get("mlflow_run_id") == info["mlflow_run_id"]
    ):
        return root
    return None


def _relocate_artifact_paths(layout: RunDirectory, old_root: Path) -> None:
    old, new = RunDirectory(old_root).mlflow_artifacts.as_uri(), layout.mlflow_artifacts.resolve().as_uri()
    with contextlib.closing(sqlite3.connect(layout.mlflow_db)) as store, store:
        tables = {name for (name,) in store.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        for table, column in _ARTIFACT_COLUMNS:
            if table in tables:
                store.execute(  # the directory itself or a path inside it, not a sibling sharing the prefix
                    f"UPDATE {table} SET {column} = ? || substr({column}, ?) "
                    f"WHERE {column} = ? OR substr({column}, 1, ?) = ?",
                    (new, len(old) + 1, old, len(old) + 1, f"{old}/"),
                )


class MLflowTracker:
    """One MLflow run, written through ``MlflowClient`` (no global MLflow state).

    Metrics of one iteration go in one batched write. ``run_id`` continues an existing run
    (resume); otherwise a new run is created in ``experiment``. A resume at ``resume_iteration``
    of a run that logged later iterations (it was killed after its last checkpoint) would log
    those steps twice: that run is closed as ``KILLED`` and a new one, tagged
    ``diffrl.resumed_from``, takes over (:attr:`replaced_run_id`; the caller replays the history).

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as run_dir:
        ...     tracker = MLflowTracker(default_tracking_uri(run_dir), experiment="demo", run_name="doc")
        ...     tracker.log_params({"algorithm": {"lr": 5e-4}})
        ...     tracker.log_metrics({"episode_return": 1.0}, step=1)
        ...     tracker.finish()
        ...     tracker.client.get_run(tracker.run_id).data.params
        {'algorithm.lr': '0.0005'}
    """

    def __init__(
        self,
        tracking_uri: str,
        *,
        experiment: str,
        run_name: str | None = None,
        run_id: str | None = None,
        artifact_location: str | None = None,
        buffer_path: str | Path | None = None,
        fallback_uri: str | None = None,
        resume_iteration: int | None = None,
    ) -> None:
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.tracking_uri = tracking_uri
        self.buffer_path = Path(buffer_path) if buffer_path is not None else None
        self.fallback_uri = fallback_uri
        self.experiment = experiment
        self._buffered: list[Metric] | None = None  # a list once the store has failed
        self.replaced_run_id: str | None = None
        if run_id is not None and self._logged_beyond(run_id, resume_iteration):
            previous = self.client.get_run(run_id).info
            if previous.status == RunStatus.to_string(RunStatus.RUNNING):  # its process died without a word
                self.client.set_terminated(run_id, status="KILLED")
            self.run_id = self.client.create_run(
                previous.experiment_id, run_name=previous.run_name, tags={"diffrl.resumed_from": run_id}
            ).info.run_id
            self.replaced_run_id = run_id
            logger.warning(
                "MLflow run %s logged iterations past %d, the checkpoint resumed from: continuing in a new run %s",
                run_id,
                resume_iteration,
                self.run_id,
            )
        elif run_id is not None:
            self.run_id = run_id
            self.client.update_run(run_id, status=RunStatus.to_string(RunStatus.RUNNING))
        else:
            found = self.client.get_experiment_by_name(experiment)
            experiment_id = (
                found.experiment_id
                if found is not None
                else self.client.create_experiment(experiment, artifact_location=artifact_location)
            )
            self.run_id = self.client.create_run(experiment_id, run_name=run_name).info.run_id
        logger.info("MLflow run %s in %s", self.run_id, tracking_uri)

    def _logged_beyond(self, run_id: str, iteration: int | None) -> bool:
        if iteration is None:
            return False
        return any(metric.step > iteration for metric in self.client.get_metric_history(run_id, "frames"))

    def log_history(self, history: list[Mapping[str, float]]) -> None:
        """The iterations of ``history`` (``1..len(history)``, a checkpoint's) that the run has not logged.

        On resume: all of them in a run that takes over from a replaced one; in the continued run,
        those a dead process had only buffered (its buffer file, which this supersedes, is removed).
        """
        logged = {metric.step for metric in self.client.get_metric_history(self.run_id, "frames")}
        timestamp = int(time.time() * 1000)
        metrics = [
            Metric(key, float(value), timestamp, step)
            for step, entry in enumerate(history, start=1)
            if step not in logged
            for key, value in entry.items()
            if math.isfinite(value)
        ]
        for start in range(0, len(metrics), 1000):  # MLflow's batch limit
            self.client.log_batch(self.run_id, metrics=metrics[start : start + 1000])
        if self._buffered is None and self.buffer_path is not None:
            self.buffer_path.unlink(missing_ok=True)

    def log_params(self, config: Mapping[str, Any]) -> None:
        params = [Param(key, value[:6000]) for key, value in flatten_config(config).items()]
        for start in range(0, len(params), 100):  # MLflow accepts at most 100 params per batch
            self.client.log_batch(self.run_id, params=params[start : start + 100])

    def set_tags(self, tags: Mapping[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, value)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """One batched write; if the store fails, a warning once, then the metrics go to the buffer file."""
        timestamp = int(time.time() * 1000)
        batch = [Metric(key, float(value), timestamp, step) for key, value in metrics.items() if math.isfinite(value)]
        if self._buffered is None:
            try:
                with _short_http_retries():
                    self.client.log_batch(self.run_id, metrics=batch)
                return
            except Exception as error:  # MlflowException, connection errors: tracking must not end the run
                self._buffered = []
                logger.warning(
                    "MLflow at %s failed (%s): training goes on; metrics are buffered%s and sent when the run ends",
                    self.tracking_uri,
                    str(error).splitlines()[0][:200],
                    f" in {self.buffer_path}" if self.buffer_path is not None else "",
                )
        self._buffered.extend(batch)
        if self.buffer_path is not None:
            with self.buffer_path.open("a") as buffer:
                for metric in batch:
                    record = {"key": metric.key, "value": metric.value, "timestamp": metric.timestamp, "step": step}
                    buffer.write(json.dumps(record) + "\n")

    def _send_buffered(self) -> bool:
        """Replay the buffered metrics; ``True`` when nothing is left to send."""
        if not self._buffered:
            return True
        try:
            with _short_http_retries():
                for start in range(0, len(self._buffered), 1000):  # MLflow's batch limit
                    self.client.log_batch(self.run_id, metrics=self._buffered[start : start + 1000])
        except Exception as error:  # still unreachable: a local store (or the buffer file) keeps them
            logger.warning(
                "MLflow at %s still fails (%s) at the end of the run",
                self.tracking_uri,
                str(error).splitlines()[0][:200],
            )
            if self.fallback_uri is not None:
                self._write_to_fallback()
            return False
        logger.info("sent %d buffered metric values to MLflow", len(self._buffered))
        self._buffered = None
        if self.buffer_path is not None:
            self.buffer_path.unlink(missing_ok=True)
        return True

    def _write_to_fallback(self) -> None:
        """The buffered metrics into a run of the local ``fallback_uri`` store, tagged with the unreachable run."""
        local = MlflowClient(tracking_uri=self.fallback_uri)
        found = local.get_experiment_by_name(self.experiment)
        experiment_id = found.experiment_id if found is not None else local.create_experiment(self.experiment)
        tags = {"diffrl.offline_copy_of": self.run_id, "diffrl.tracking_uri": self.tracking_uri}
        run_id = local.create_run(experiment_id, tags=tags).info.run_id
        for start in range(0, len(self._buffered), 1000):
            local.log_batch(run_id, metrics=self._buffered[start : start + 1000])
        local.set_terminated(run_id)
        logger.warning(
            "%d metric values logged after MLflow failed are in the local store %s (run %s) and in %s",
            len(self._buffered),
            self.fallback_uri,
            run_id,
            self.buffer_path,
        )

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Upload ``path``; once the store has failed, or if the upload fails, it stays in the run directory only."""
        path = Path(path)
        if self._buffered is not None:
            logger.warning("MLflow failed earlier: %s stays in the run directory only", path)
            return
        try:
            with _short_http_retries():
                if path.is_dir():
                    self.client.log_artifacts(self.run_id, os.fspath(path), artifact_path=artifact_path)
                else:
                    self.client.log_artifact(self.run_id, os.fspath(path), artifact_path=artifact_path)
        except Exception as error:  # the file is on disk already: the run must not fail for its copy
            logger.warning("MLflow did not take %s (%s): it stays in the run directory only", path, error)

    def finish(self, status: str = "FINISHED") -> None:
        """Send what was buffered and end the run with ``FINISHED``, ``FAILED`` or ``KILLED``."""
        if not self._send_buffered():
            return
        self.client.set_terminated(self.run_id, status=status)
