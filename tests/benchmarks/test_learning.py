"""benchmarks/learning.py: its seed aggregation, rsl_rl report parsing, commands and ``--quick`` JSON records.

The math is checked on hand-made curves against values computed by hand; no training runs
except the slow ``--quick`` test (one tiny MuJoCo case per script).
"""

from __future__ import annotations

import importlib
import json
import math
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "learning.py"
RECORD_FIELDS = {
    "task",
    "algorithm",
    "seed",
    "num_envs",
    "budget_frames",
    "frames",
    "returns",
    "train_seconds",
    "final_return",
    "wall_seconds",
    "command",
    "ok",
}


@pytest.fixture
def learning(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    return importlib.import_module("learning")


def test_on_grid_interpolates_inside_and_is_nan_outside_or_before_the_first_episode(learning):
    frames = [10.0, 20.0, 30.0, 40.0]
    values = [math.nan, 1.0, 3.0, 7.0]  # no episode had finished at 10 frames
    grid = np.array([5.0, 10.0, 20.0, 25.0, 40.0, 45.0])
    result = learning.on_grid(frames, values, grid)
    # 25 lies halfway between (20, 1) and (30, 3): 2.
    np.testing.assert_array_equal(result, [math.nan, math.nan, 1.0, 2.0, 7.0, math.nan])


def test_aggregate_curves_matches_hand_computed_mean_std_min_max(learning):
    grid = np.array([1.0, 2.0, 3.0])
    curves = [
        ([1.0, 2.0, 3.0], [0.0, 2.0, 4.0]),
        ([1.0, 2.0, 3.0], [2.0, 4.0, 10.0]),
        ([1.0, 2.0], [math.nan, 6.0]),  # a seed without a value at 1 (no episode yet) and at 3 (shorter)
    ]
    stats = learning.aggregate_curves(curves, grid)
    # At 1: seeds {0, 2}; at 2: {2, 4, 6}; at 3: {4, 10}. Population std: sqrt(mean of squared deviations).
    np.testing.assert_array_equal(stats["count"], [2, 3, 2])
    np.testing.assert_allclose(stats["mean"], [1.0, 4.0, 7.0])
    np.testing.assert_allclose(stats["std"], [1.0, math.sqrt(8 / 3), 3.0])
    np.testing.assert_allclose(stats["min"], [0.0, 2.0, 4.0])
    np.testing.assert_allclose(stats["max"], [2.0, 6.0, 10.0])


def test_aggregate_curves_leaves_points_without_any_value_nan(learning):
    stats = learning.aggregate_curves([([1.0, 2.0], [math.nan, 1.0])] * 2, np.array([1.0, 2.0]))
    assert math.isnan(stats["mean"][0]) and stats["count"][0] == 0
    assert stats["mean"][1] == 1.0 and stats["std"][1] == 0.0


def test_summarize_gives_the_final_returns_spread_over_seeds(learning):
    records = [
        {
            "task": "Isaac-Cartpole",
            "algorithm": "ppo",
            "seed": seed,
            "budget_frames": 300,
            "num_envs": 4,
            "final_return": final,
            "wall_seconds": 10.0,
            "train_seconds": [1.0, 2.0],
            "frames": [100.0, 200.0, 300.0],
            "returns": [0.0, final + 1.0, final],  # at half the budget (150 frames): (final + 1) / 2
        }
        for seed, final in ((0, 1.0), (1, 2.0), (2, 6.0))
    ]
    (summary,) = learning.summarize(records)
    assert summary["seeds"] == [0, 1, 2]
    assert summary["final_mean"] == pytest.approx(3.0)
    assert summary["final_std"] == pytest.approx(math.sqrt((4 + 1 + 9) / 3))
    assert (summary["final_min"], summary["final_max"]) == (1.0, 6.0)
    assert summary["half_budget_mean"] == pytest.approx(2.0)
    assert summary["half_budget_std"] == pytest.approx(summary["final_std"] / 2)
    # Each seed's best point (final + 1), averaged over seeds.
    assert (summary["best_mean"], summary["best_std"]) == (pytest.approx(4.0), pytest.approx(summary["final_std"]))
    table = learning.summary_table([summary])
    assert "3.00 ± 2.16" in table and "[1.00, 6.00]" in table and "2.00 ± 1.08" in table and "4.00 ± 2.16" in table
    assert table.rstrip().split("|")[-3].strip() == "100"  # train fps: 300 frames over 3 s of training
    assert summary["seconds_per_iteration"] == 1.5  # the median of [1, 2]

    # Peaks final + 1 at 200 frames: 3 and 7 reach 2.5 there, 2 never does.
    (reaching,) = learning.summarize(records, threshold=2.5)
    assert (reaching["frames_to_threshold"], reaching["seeds_reaching_threshold"]) == (200.0, 2)
    assert "200 (2/3)" in learning.summary_table([reaching])


RSL_RL_REPORT = """
################################################################################
                             Learning iteration 0/2
                            Total steps: 4096
                        Collection time: 0.500s
                          Learning time: 0.250s
                        Mean value loss: 0.2410
--------------------------------------------------------------------------------
################################################################################
                             Learning iteration 1/2
                            Total steps: 8192
                        Collection time: 0.300s
                          Learning time: 0.100s
                            Mean reward: -0.69
                    Mean episode length: 24.57
--------------------------------------------------------------------------------
"""


def test_parse_rsl_rl_output_reads_frames_returns_and_times_per_iteration(learning):
    curve = learning.parse_rsl_rl_output(RSL_RL_REPORT)
    assert curve["frames"] == [4096.0, 8192.0]
    assert math.isnan(curve["returns"][0]) and curve["returns"][1] == -0.69  # no episode had ended at iteration 0
    assert curve["train_seconds"] == pytest.approx([0.75, 0.4])


def test_every_algorithm_gets_the_tasks_envs_and_frame_budget(learning, tmp_path):
    for task in learning.TASKS.values():
        commands = {algorithm: learning.case_command(task, algorithm, 1, tmp_path) for algorithm in learning.RECIPES}
        for algorithm, (recipe, selection) in learning.RECIPES.items():
            command = commands[algorithm]
            assert f"recipes/{recipe}.py" in command[1] and command[2 : 2 + len(selection)] == selection
            assert f"env.num_envs={task.num_envs}" in command and "seed=1" in command
            assert f"collector.total_frames={task.total_frames}" in command
            assert f"collector.steps_per_env={task.steps_per_env}" in command
            assert (f"env.episode_length_s={task.episode_length_s}" in command) == (task.episode_length_s is not None)
        if task.episode_length_s is not None:  # Isaac Lab's rsl_rl CLI runs the task's own episode length
            with pytest.raises(ValueError, match="episode length"):
                learning.case_command(task, "rsl_rl", 1, tmp_path)
            continue
        commands["rsl_rl"] = learning.case_command(task, "rsl_rl", 1, tmp_path)
        rsl_rl = " ".join(commands["rsl_rl"])
        assert str(task.num_envs) in rsl_rl and str(task.iterations) in rsl_rl and str(task.steps_per_env) in rsl_rl
        assert ("isaaclab" in commands["rsl_rl"][0]) == (task.backend == "isaaclab")
    display = learning.display_command(learning.case_command(learning.TASKS["cartpole"], "genpo", 0, tmp_path))
    assert display.startswith("python recipes/genpo_isaaclab.py task=cartpole seed=0")
    assert str(tmp_path) not in display


def test_summary_reports_the_mean_reward_per_step_of_the_last_rollouts(learning):
    window = learning.REWARD_WINDOW
    record = {
        "task": "Isaac-Velocity-Flat-UnitreeGo2",
        "algorithm": "genpo",
        "seed": 0,
        "budget_frames": 300,
        "num_envs": 4,
        "final_return": math.nan,  # 1000-step episodes: none ends within the budget
        "wall_seconds": 10.0,
        "train_seconds": [1.0] * (window + 2),
        "frames": [100.0 * k for k in range(1, window + 3)],
        "returns": [math.nan] * (window + 2),
        "reward_per_step": [-9.0, -9.0] + [0.1 * k for k in range(window)],
    }
    other_seed = {**record, "seed": 1, "reward_per_step": [-9.0, -9.0] + [0.3] * window}
    (summary,) = learning.summarize([record, other_seed])
    first = 0.1 * (window - 1) / 2  # the mean of 0, 0.1, ..., 0.1 (window - 1)
    assert summary["reward_per_step_mean"] == pytest.approx((first + 0.3) / 2)
    assert summary["reward_per_step_std"] == pytest.approx(abs(0.3 - first) / 2)
    rsl_rl = {**record, "algorithm": "rsl_rl"}
    del rsl_rl["reward_per_step"]
    table = learning.summary_table(learning.summarize([record, rsl_rl]))
    assert f"reward/step (last {window} it.)" in table and "n/a" in table.splitlines()[-1]


def test_the_preset_suite_gives_every_task_the_same_envs_and_frames_at_its_presets_rollout_length(learning):
    suite = [learning.TASKS[f"{preset}_suite"] for preset in learning.PRESET_SUITE]
    assert len(suite) == 10
    assert {(task.num_envs, task.total_frames) for task in suite} == {(64, 64 * 768)}
    humanoid = learning.TASKS["humanoid_suite"]  # the preset's 32 steps per env
    assert (humanoid.env_id, humanoid.preset, humanoid.steps_per_env, humanoid.iterations) == (
        "Isaac-Humanoid", "humanoid", 32, 24
    )  # fmt: skip


def test_a_variant_runs_its_algorithms_command_plus_its_overrides(learning, tmp_path):
    variant = learning.Variant.parse(["trudi_K4", "trudi", "algorithm.actor.num_steps=4", "seed=7"])
    assert variant == learning.Variant("trudi_K4", "trudi", ("algorithm.actor.num_steps=4", "seed=7"))
    task = learning.TASKS["cartpole"]
    plain = learning.case_command(task, "trudi", 0, tmp_path)
    # Appended last, so that Hydra lets them win over the task's own overrides.
    assert learning.case_command(task, "trudi", 0, tmp_path, variant.overrides) == [*plain, *variant.overrides]
    for words in (["trudi_K4", "trudi"], ["x", "rsl_rl", "a=1"], ["x", "unknown", "a=1"]):
        with pytest.raises(SystemExit, match="LABEL ALGORITHM OVERRIDE"):
            learning.Variant.parse(words)


@pytest.mark.slow
def test_quick_json_has_one_record_per_case(tmp_path):
    output = tmp_path / "learning.json"
    command = [sys.executable, str(SCRIPT), "--quick", "--json", str(output), "--plots", str(tmp_path / "plots")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "final return" in result.stdout  # the printed table

    report = json.loads(output.read_text())
    assert {"cpu", "torch_threads", "device"} <= set(report["machine"])
    (record,) = report["records"]
    assert RECORD_FIELDS <= set(record), record
    assert record["ok"] and record["algorithm"] == "ppo" and record["seed"] == 0
    assert record["frames"][-1] == record["budget_frames"] == 8 * 32 * 3
    assert len(record["returns"]) == len(record["frames"]) == 3
    assert math.isfinite(record["final_return"])  # 50-step episodes end within the run
    assert (tmp_path / "plots" / "learning_halfcheetah.png").stat().st_size > 0


@pytest.mark.slow
def test_resume_continues_a_stopped_case_from_its_checkpoint_and_a_rerun_starts_over(tmp_path):
    def sweep(*options: str) -> dict:
        output = tmp_path / "learning.json"
        command = [sys.executable, str(SCRIPT), "--quick", "--out", str(tmp_path / "out"), "--json", str(output)]
        result = subprocess.run([*command, *options], capture_output=True, text=True, timeout=600, cwd=REPO)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        (record,) = json.loads(output.read_text())["records"]
        return record

    stopped = sweep("--iterations", "2")
    case = tmp_path / "out" / "halfcheetah" / "ppo" / "seed0"
    # A sweep killed after the run's last checkpoint but before the record: case.json is missing.
    (case / "case.json").unlink()
    resumed = sweep("--resume")
    assert resumed["ok"] and resumed["resumed_from"] == "checkpoint-000000000002"
    # One MLflow run, continued: the stopped run's two iterations, then the third.
    assert resumed["frames"] == [256, 512, 768]
    assert resumed["returns"][:2] == stopped["returns"]

    rerun = sweep("--iterations", "1")  # without --resume: an emptied directory, a fresh run
    assert "resumed_from" not in rerun and rerun["frames"] == [256]
