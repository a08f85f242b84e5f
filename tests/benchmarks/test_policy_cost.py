"""benchmarks/policy_cost.py runs and writes the documented JSON records (speed is never asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "policy_cost.py"
FIELDS = {"policy", "batch", "operation", "median_s", "ratio", "passes", "device", "mode"}


def test_quick_json_has_the_documented_records(tmp_path):
    output = tmp_path / "cost.json"
    command = [sys.executable, str(SCRIPT), "--quick", "--json", str(output)]
    command += ["--sizes", "8", "--repeats", "1", "--hidden-sizes", "16", "--num-steps", "2", "--threads", "1"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ratio/passes" in result.stdout  # the printed table

    report = json.loads(output.read_text())
    assert {"cpu", "torch_threads", "device"} <= set(report["machine"])
    records = report["records"]
    for record in records:
        assert FIELDS <= set(record), record
        assert record["median_s"] > 0 and record["ratio"] > 0 and record["passes"] >= 1, record
        assert record["batch"] == 8 and record["device"] == "cpu"
    cases = {(record["policy"], record["operation"]): record for record in records}
    for policy in ("gaussian", "genpo"):
        for operation in ("network", "linear_layers", "sample", "log_prob", "loss_backward"):
            assert (policy, operation) in cases
        assert cases[(policy, "network")]["ratio"] == 1.0
        assert cases[(policy, "linear_layers")]["passes"] == 1
    # GenPO's network-pass counts for N = 2: sampling 2N, one inversion 2N, the loss 4N.
    assert [cases[("genpo", op)]["passes"] for op in ("sample", "log_prob", "loss_backward")] == [4, 4, 8]
