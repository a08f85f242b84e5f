"""Running a recipe as a user runs it (its own process: Isaac Lab allows one simulation per process) and reading
its MLflow run back."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from mlflow import MlflowClient

REPO = Path(__file__).resolve().parents[1]


def train_recipe(script: str, run_dir: Path, *overrides: str, timeout: float = 1500) -> tuple[MlflowClient, str]:
    """Run ``recipes/<script>`` into ``run_dir`` on offline assets without a progress bar; its MLflow client and run id.

    Fails the test with the end of the recipe's stderr if it does not exit 0.
    """
    command = [
        sys.executable,
        str(REPO / "recipes" / script),
        f"hydra.run.dir={run_dir}",
        "logger.progress=false",
        "env.assets=offline",
        *overrides,
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    info = json.loads((run_dir / "run.json").read_text())
    return MlflowClient(info["tracking_uri"]), info["mlflow_run_id"]


def metric_history(client: MlflowClient, run_id: str, key: str) -> list[float]:
    """The values ``key`` was logged with, in step order."""
    return [metric.value for metric in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]
