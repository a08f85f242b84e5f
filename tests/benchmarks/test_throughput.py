"""benchmarks/throughput.py: how a collection step is split into Isaac Lab's step, the policy and the rest.

Checked on hand-made calls and records with values computed by hand; the Isaac Lab measurements
themselves are not run here (speed is never asserted).
"""

from __future__ import annotations

import importlib
import time
from pathlib import Path
from types import ModuleType

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def throughput(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    return importlib.import_module("throughput")


class Sleeper(torch.nn.Module):
    def forward(self, seconds: float) -> float:
        time.sleep(seconds)
        return seconds


def test_summed_call_time_adds_every_call_and_restores_the_method(throughput):
    module = Sleeper()
    with throughput.summed_call_time(module, "forward") as total:
        assert module(0.02) == 0.02 and module(0.03) == 0.03  # through nn.Module.__call__
    assert 0.05 <= total[0] < 0.5
    assert "forward" not in vars(module) and module.forward.__func__ is Sleeper.forward
    with throughput.summed_call_time(None, "forward") as nothing:  # the collector's own random policy
        pass
    assert nothing == [0.0]


def test_a_failing_call_is_timed_and_the_method_still_restored(throughput):
    module = Sleeper()
    with pytest.raises(TypeError), throughput.summed_call_time(module, "forward") as total:
        module("not seconds")
    assert total[0] > 0 and "forward" not in vars(module)


def test_the_split_and_the_share_of_the_simulator(throughput):
    # 10 steps in 0.2 s: 0.15 s in env.step, 0.03 s in the policy, 0.02 s elsewhere.
    split = throughput._split(10, 0.2, 0.15, 0.03, 0.4, "cpu")
    assert split == pytest.approx({"steps_with_reset": 0.4, "simulator_ms": 15.0, "policy_ms": 3.0, "rest_ms": 2.0})
    assert throughput._split(10, 0.2, 0.15, 0.03, 0.4, "cuda:0")["simulator_ms"] is None

    def record(name: str, frames_per_s: float, split: dict) -> dict:
        return {"task": "Isaac-Cartpole", "num_envs": 256, "name": name, "frames_per_s": frames_per_s, **split}

    records = [
        record("isaaclab_step", 1000.0, throughput._split(10, 0.1, 0.1, 0.0, 0.2, "cpu")),
        record("gaussian", 500.0, split),
        {"task": "Isaac-Cartpole", "num_envs": 256, "name": "rsl_rl_ppo_rollout", "frames_per_s": 900.0},
    ]
    throughput.add_round_ratios(records, "isaaclab_step")
    table = throughput.collection_table(records)
    rows = {line.split("|")[3].strip(): [cell.strip() for cell in line.split("|")[4:-1]] for line in table.splitlines()}
    # frames/s, × isaaclab_step, × its env.step (15 of 20 ms), env.step, policy and rest ms, steps with a reset
    assert rows["gaussian"] == ["500", "0.50", "0.75", "15.00", "3.00", "2.00", "0.40"]
    assert rows["isaaclab_step"][1:3] == ["1.00", "1.00"]
    assert rows["rsl_rl_ppo_rollout"] == ["900", "0.90", "n/a", "n/a", "n/a", "n/a", "n/a"]


@pytest.mark.parametrize("variant", ["compiled", "sac/compiled:compile=true", "ppo/:compile=true"])
def test_a_variant_without_overrides_a_name_or_a_known_algorithm_is_refused(throughput, variant, capsys):
    with pytest.raises(SystemExit):
        throughput.parse_args(["--variant", variant])
    assert "expected [ppo/|genpo/]NAME:OVERRIDES" in capsys.readouterr().err


def test_variants_name_their_algorithm_or_default_to_genpo(throughput):
    args = throughput.parse_args(["--variant", "compiled:compile=true", "--variant", "ppo/fast:compile=true,seed=2"])
    assert throughput.training_cases(args.variant) == [
        ("ppo", "", []),
        ("genpo", "", []),
        ("genpo", "compiled", ["--override=compile=true"]),
        ("ppo", "fast", ["--override=compile=true", "--override=seed=2"]),
    ]


def test_the_ratio_is_the_median_of_the_rounds_own_ratios(throughput):
    # Two rounds: rsl_rl 100 then 200 frames/s, diffrl 110 then 180; the rounds' ratios are 1.1 and 0.9.
    def record(name: str, frames_per_s: float, repeat: int) -> dict:
        return {
            "measurement": "training",
            "task": "Isaac-Cartpole",
            "num_envs": 256,
            "name": name,
            "frames_per_s": frames_per_s,
            "repeat": repeat,
            "collection_s_per_iteration": 0.2,
            "update_s_per_iteration": 0.05,
        }

    rounds = [[record("rsl_rl_ppo", 100.0, 0), record("diffrl_ppo", 110.0, 0), record("diffrl_genpo", 40.0, 0)]]
    rounds.append([record("rsl_rl_ppo", 200.0, 1), record("diffrl_ppo", 180.0, 1)])  # GenPO failed in round 2
    for records in rounds:
        throughput.add_round_ratios(records, "rsl_rl_ppo")
    merged = {r["name"]: r for r in throughput.median_records(rounds[0] + rounds[1])}
    assert merged["diffrl_ppo"]["ratio_samples"] == pytest.approx([1.1, 0.9])
    assert merged["diffrl_ppo"]["ratio"] == pytest.approx(1.0)  # not 145 / 150, the ratio of the median rates
    assert merged["diffrl_genpo"]["ratio_samples"] == pytest.approx([0.4])
    table = throughput.training_table(list(merged.values()))
    rows = {line.split("|")[3].strip(): [cell.strip() for cell in line.split("|")[4:-1]] for line in table.splitlines()}
    assert rows["diffrl_ppo"][:2] == ["145", "1.00 (1.10, 0.90)"]
    assert rows["diffrl_genpo"][:2] == ["40", "0.40"]
    assert rows["rsl_rl_ppo"][:2] == ["150", "1.00 (1.00, 1.00)"]
