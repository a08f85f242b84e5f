"""benchmarks/render_cost.py runs on an Isaac Lab task and prints its summary line (speed is never asserted)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_render_cost_prints_step_and_frame_medians():
    command = [sys.executable, str(REPO / "benchmarks" / "render_cost.py"), "--task", "Isaac-Cartpole"]
    command += ["--num-envs", "2", "--size", "64", "48", "--steps", "2", "--rounds", "2"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = re.search(
        r"Isaac-Cartpole, 2 envs: step ([\d.]+) ms, 64x48 frame ([\d.]+) ms, frame / step ([\d.]+) "
        r"\(median of 2 rounds of 2\)",
        result.stdout,
    )
    assert summary, result.stdout[-2000:]
    step, frame, ratio = map(float, summary.groups())
    assert step > 0 and frame > 0 and ratio > 0
