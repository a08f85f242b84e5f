"""MLflow child runs of a training run: where evaluations and exports are recorded."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import mlflow
from mlflow import MlflowClient

logger = logging.getLogger("diffrl.deploy")


@contextmanager
def child_run(tracking_uri: str, parent_run_id: str, kind: str) -> Iterator[mlflow.ActiveRun]:
    """An active MLflow run nested under a training run, in the same store.

    The child is created in the training run's experiment with the tags ``mlflow.parentRunId``
    and ``diffrl.source_run`` (the training run's id) and ``diffrl.kind`` (``kind``), so the
    MLflow UI shows it under its training run; the training run itself is left untouched.
    MLflow's fluent API (``mlflow.log_metric``, ``mlflow.onnx.log_model``) writes to it inside the
    ``with`` block; the global tracking URI is restored afterwards.

    Example (not run as a doctest: creating an MLflow store takes seconds; the recipe tests cover it):

    .. code-block:: python

        tracking_uri, run_id = recorded_run(RunDirectory("runs/genpo/Isaac-Cartpole/<date>"))
        with child_run(tracking_uri, run_id, "evaluation"):
            mlflow.log_metric("deterministic/return_mean", 4.8)
    """
    client = MlflowClient(tracking_uri)
    parent = client.get_run(parent_run_id)
    child = client.create_run(
        parent.info.experiment_id,
        run_name=f"{kind}-{parent.info.run_name}",
        tags={"mlflow.parentRunId": parent_run_id, "diffrl.source_run": parent_run_id, "diffrl.kind": kind},
    )
    previous_uri = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(tracking_uri)
    try:
        with mlflow.start_run(run_id=child.info.run_id) as run:
            logger.info("MLflow %s run %s under run %s in %s", kind, run.info.run_id, parent_run_id, tracking_uri)
            yield run
    finally:
        mlflow.set_tracking_uri(previous_uri)
