"""MLflow tracking of a training run: flattened params, per-iteration metrics, artifacts."""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunStatus

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


def default_tracking_uri(run_dir: str | Path) -> str:
    """An embedded sqlite store inside the run directory (MLflow 3 refuses plain file stores)."""
    return f"sqlite:///{RunDirectory(run_dir).mlflow_db.resolve()}"


class MLflowTracker:
    """One MLflow run, written through ``MlflowClient`` (no global MLflow state).

    Metrics of one iteration go in one batched write. ``run_id`` continues an existing run
    (resume); otherwise a new run is created in ``experiment``.

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
    ) -> None:
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.tracking_uri = tracking_uri
        if run_id is not None:
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

    def log_params(self, config: Mapping[str, Any]) -> None:
        params = [Param(key, value[:6000]) for key, value in flatten_config(config).items()]
        for start in range(0, len(params), 100):  # MLflow accepts at most 100 params per batch
            self.client.log_batch(self.run_id, params=params[start : start + 100])

    def set_tags(self, tags: Mapping[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, value)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        timestamp = int(time.time() * 1000)
        batch = [Metric(key, float(value), timestamp, step) for key, value in metrics.items() if math.isfinite(value)]
        self.client.log_batch(self.run_id, metrics=batch)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        path = Path(path)
        if path.is_dir():
            self.client.log_artifacts(self.run_id, os.fspath(path), artifact_path=artifact_path)
        else:
            self.client.log_artifact(self.run_id, os.fspath(path), artifact_path=artifact_path)

    def finish(self, status: str = "FINISHED") -> None:
        """End the run with ``FINISHED``, ``FAILED`` or ``KILLED``."""
        self.client.set_terminated(self.run_id, status=status)
