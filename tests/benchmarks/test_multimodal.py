"""benchmarks/multimodal.py: its tasks' optima, partition functions and coverage by hand, and the ``--quick`` JSON."""

from __future__ import annotations

import importlib
import json
import math
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "multimodal.py"


@pytest.fixture
def multimodal(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    return importlib.import_module("multimodal")


@pytest.mark.parametrize("dim", [1, 2])
def test_log_partition_is_the_gaussian_one_when_the_bumps_are_far(multimodal, dim):
    # A bump at 100 is 0 on the grid: r(a) = −½‖a‖², so Z = ∫ exp(−‖a‖²/(2α)) da = (2πα)^{d/2}.
    task = multimodal.Task("far", dim, ((100.0,) * dim,))
    for alpha in (0.1, 0.5):
        assert task.log_partition(alpha) == pytest.approx(0.5 * dim * math.log(2 * math.pi * alpha), abs=1e-6)


def test_optima_are_the_reward_maxima_near_each_peak(multimodal):
    task = multimodal.TASKS["bimodal_1d"]
    optima = task.optima()[:, 0]
    assert optima.tolist() == pytest.approx([-optima[1].item(), optima[1].item()])  # symmetric
    assert 0.5 < optima[1] < 0.6  # the action cost pulls the maximum inward from 0.6
    nearby = optima[1] + torch.linspace(-0.05, 0.05, 101, dtype=torch.float64)
    assert task.reward(nearby.unsqueeze(-1)).max() <= task.reward(optima[1].reshape(1, 1)) + 1e-6
    ring = multimodal.TASKS["ring_2d"]
    assert ring.optima().norm(dim=-1).std() < 1e-12 and len(ring.optima()) == 8


def test_coverage_counts_samples_near_each_optimum(multimodal):
    task = multimodal.TASKS["bimodal_2d"]
    optima = task.optima()
    samples = torch.cat([optima[0].expand(3, 2), optima[1].expand(1, 2), torch.zeros(4, 2, dtype=torch.float64)])
    assert task.coverage(samples) == [3 / 8, 1 / 8]
    ring = multimodal.TASKS["ring_2d"]
    assert ring.coverage(ring.optima()) == [1 / 8] * 8


@pytest.mark.slow
def test_quick_json_has_one_record_per_method(tmp_path):
    output = tmp_path / "multimodal.json"
    command = [sys.executable, str(SCRIPT), "--quick", "--json", str(output), "--out", str(tmp_path)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=1200, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    records = json.loads(output.read_text())["records"]
    methods = {record["method"] for record in records}
    assert methods == {"genpo", "trudi", "reppo", "trudi_ppo", "dppo", "fpo", "ppo"}
    for record in records:
        assert record["task"] == "bimodal_1d" and len(record["coverage"]) == 2
        assert all(0 <= share <= 1 for share in record["coverage"]) and sum(record["coverage"]) <= 1
        assert math.isfinite(record["mean_reward"]) and math.isfinite(record["entropy_knn"])
        assert record["kl_to_boltzmann"] is None or math.isfinite(record["kl_to_boltzmann"])
    assert (tmp_path / "multimodal.png").stat().st_size > 0
