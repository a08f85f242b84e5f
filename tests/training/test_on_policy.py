"""OnPolicyTrainer on a real MuJoCo env: counters, checkpoints, resume, crash safety, bad checkpoints."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torchrl.envs import Transform

from diffrl.envs import make_gym_env, training_env
from diffrl.modules import DIMEActor, GenPOActor, GenPOFlow, HLGaussQValue, make_value_network
from diffrl.numerics import NumericalError
from diffrl.objectives import GenPOLoss, TruDiLoss
from diffrl.training import OnPolicyTrainer, PathwiseUpdate, PPOUpdate
from diffrl.training.experiment import _raise_stop_requested

NUM_ENVS, STEPS = 4, 16


def make_trainer(
    checkpoint_dir: Path,
    total_frames: int,
    hidden: int = 16,
    family: str = "ppo",
    normalize_observations: bool = True,
    **kwargs,
) -> OnPolicyTrainer:
    """GenPO with the PPO family's update, or (``family="pathwise"``) TruDi with the pathwise one."""
    torch.manual_seed(0)
    env = training_env(
        make_gym_env("HalfCheetah-v5", NUM_ENVS, seed=0, max_episode_steps=20),
        normalize_observations=normalize_observations,
    )
    obs_dim, action_dim = env.observation_spec["observation"].shape[-1], env.action_spec.shape[-1]
    if family == "pathwise":
        actor = DIMEActor(action_dim, obs_dim, num_steps=2, hidden_sizes=[hidden])
        loss = TruDiLoss(actor, HLGaussQValue(obs_dim, action_dim, [16], num_bins=11), aux_loss_coeff=1.0)
        update = PathwiseUpdate(loss, num_epochs=2, num_minibatches=2)
    else:
        actor = GenPOActor(GenPOFlow(action_dim, obs_dim, num_steps=2, hidden_sizes=[hidden]))
        update = PPOUpdate(GenPOLoss(actor, make_value_network(obs_dim, [16])), num_epochs=2, num_minibatches=2)
    return OnPolicyTrainer(
        env=env,
        update=update,
        total_frames=total_frames,
        steps_per_env=STEPS,
        checkpoint_dir=checkpoint_dir,
        checkpoint_every=2,
        progress=False,
        **kwargs,
    )


def test_iterations_frames_and_metrics_are_counted(tmp_path):
    trainer = make_trainer(tmp_path, total_frames=3 * NUM_ENVS * STEPS)
    history = trainer.train()
    assert [entry["frames"] for entry in history] == [64.0, 128.0, 192.0]
    assert trainer.progress.iteration == 3
    # 20-step episodes end within 64-frame batches of 16 steps per env: returns are reported.
    assert math.isfinite(history[-1]["episode_return"]) and history[-1]["episode_length"] == 20.0
    for key in ("loss_objective", "loss_critic", "loss_compression", "kl_approx", "kl_k3", "ESS", "learning_rate"):
        assert math.isfinite(history[-1][key]), key
    assert [path.name for path in trainer.run_state.checkpoints.checkpoints()] == [
        "checkpoint-000000000002",
        "checkpoint-000000000003",
    ]


def test_resume_continues_counters_history_and_parameters(tmp_path):
    first = make_trainer(tmp_path, total_frames=2 * NUM_ENVS * STEPS)
    first.train()
    saved = {key: value.clone() for key, value in first.update.actor.state_dict().items()}
    saved_lr = float(first.update.learning_rate)

    resumed = make_trainer(tmp_path, total_frames=4 * NUM_ENVS * STEPS)
    resumed.load_checkpoint(first.run_state.checkpoints.latest())
    assert resumed.progress.iteration == 2 and resumed.progress.frames == 128
    assert float(resumed.update.learning_rate) == saved_lr
    for key, value in resumed.update.actor.state_dict().items():
        assert torch.equal(value, saved[key]), key
    history = resumed.train()
    assert [entry["frames"] for entry in history] == [64.0, 128.0, 192.0, 256.0]
    assert resumed.progress.iteration == 4


def test_interrupted_training_checkpoints_the_last_completed_iteration(tmp_path):
    def interrupt_at_third(metrics: dict[str, float], iteration: int) -> None:
        if iteration == 3:
            raise KeyboardInterrupt

    trainer = make_trainer(tmp_path, total_frames=10 * NUM_ENVS * STEPS, on_metrics=interrupt_at_third)
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    assert trainer.run_state.checkpoints.latest().name == "checkpoint-000000000003"
    resumed = make_trainer(tmp_path, total_frames=10 * NUM_ENVS * STEPS)
    resumed.load_checkpoint(trainer.run_state.checkpoints.latest())
    assert resumed.progress.iteration == 3


def test_corrupted_or_missing_checkpoint_is_a_clear_error(tmp_path):
    trainer = make_trainer(tmp_path / "run", total_frames=2 * NUM_ENVS * STEPS)
    trainer.train()
    latest = trainer.run_state.checkpoints.latest()
    with pytest.raises(ValueError, match="does not exist"):
        trainer.load_checkpoint(tmp_path / "nowhere")
    payloads = [path for path in latest.rglob("*") if path.is_file() and path.suffix != ".json"]
    assert payloads, "the checkpoint has tensor payloads to corrupt"
    for payload in payloads:
        payload.write_bytes(b"not a tensor file")
    # tensordict would map a wrong-sized tensor file by zero-filling it: the size check names the file.
    with pytest.raises(ValueError, match=f"cannot resume from checkpoint {latest}: corrupted checkpoint: {latest}/"):
        trainer.load_checkpoint(latest)
    not_a_checkpoint = tmp_path / "empty"
    not_a_checkpoint.mkdir()
    with pytest.raises(ValueError, match="not a TorchRL checkpoint"):
        trainer.load_checkpoint(not_a_checkpoint)


TIMINGS = {"frames_per_second", "collection_time", "update_time"}


def assert_same_histories(uninterrupted: list[dict[str, float]], continued: list[dict[str, float]]) -> None:
    """Every metric of every iteration bit-identical (timings aside; NaN before the first episode equals NaN)."""
    assert len(continued) == len(uninterrupted)
    for straight, split in zip(uninterrupted, continued, strict=True):
        assert straight.keys() == split.keys()
        for key in straight.keys() - TIMINGS:
            same = straight[key] == split[key] or (math.isnan(straight[key]) and math.isnan(split[key]))
            assert same, (straight["frames"], key, straight[key], split[key])


@pytest.mark.parametrize("family", ["ppo", "pathwise"])
def test_resumed_run_reproduces_the_uninterrupted_run_exactly(tmp_path, family):
    # 20-step episodes over 16-step rollouts: the resume lands mid-episode, so the simulator
    # state, the collector's carried step and the RNG streams all have to be restored (pathwise:
    # also α, λ, the old actor, both optimizers and the reward normalizer's running returns).
    total = 5 * NUM_ENVS * STEPS
    uninterrupted = make_trainer(tmp_path / "straight", total_frames=total, family=family).train()

    # Stopped after 3 iterations (checkpoints every 2): the resume is from the final checkpoint.
    first = make_trainer(tmp_path / "split", total_frames=3 * NUM_ENVS * STEPS, family=family)
    first.train()
    assert first.run_state.checkpoints.latest().name == "checkpoint-000000000003"
    resumed = make_trainer(tmp_path / "split", total_frames=total, family=family)
    resumed.load_checkpoint(first.run_state.checkpoints.latest())
    continued = resumed.train()

    assert_same_histories(uninterrupted, continued)


class FailAtStep(Transform):
    """Fails at the env's ``step``-th step: an exception, or a real SIGTERM to this process."""

    def __init__(self, step: int, failure: str) -> None:
        super().__init__()
        self.step, self.failure, self.steps = step, failure, 0

    def _step(self, tensordict, next_tensordict):
        self.steps += 1
        if self.steps == self.step:
            if self.failure == "sigterm":
                os.kill(os.getpid(), signal.SIGTERM)
            else:
                raise RuntimeError("the simulator lost its GPU context")
        return next_tensordict


def fail_in_the_update(trainer: OnPolicyTrainer, call: int) -> None:
    """Makes the loss raise at its ``call``-th minibatch, after earlier minibatches stepped the optimizer."""
    loss = trainer.update.loss_module
    forward, calls = loss.forward, [0]

    def failing_forward(*args, **kwargs):
        calls[0] += 1
        if calls[0] == call:
            raise KeyboardInterrupt("Ctrl-C during the update")
        return forward(*args, **kwargs)

    loss.forward = failing_forward


@pytest.mark.parametrize("where", ["update", "collection", "sigterm"])
def test_a_run_stopped_mid_iteration_checkpoints_the_last_completed_one_and_resumes_exactly(tmp_path, where):
    # Stopped in iteration 4, when the envs have moved past iteration 3's update and (in the
    # update) two of four minibatch steps have changed the weights: the checkpoint must hold
    # iteration 3 as it ended, and a resume from it must reproduce the uninterrupted run.
    total = 5 * NUM_ENVS * STEPS
    uninterrupted = make_trainer(tmp_path / "straight", total_frames=total).train()

    stopped = make_trainer(tmp_path / "split", total_frames=total, keep_checkpoints=1)
    if where == "update":
        fail_in_the_update(stopped, call=3 * 4 + 3)  # 2 epochs x 2 minibatches per iteration
        expected = pytest.raises(KeyboardInterrupt, match="during the update")
    else:
        stopped.env.append_transform(FailAtStep(3 * STEPS + 5, where))
        # The simulator's own error reaches the user (not the collector's shutdown), SIGTERM as Ctrl-C.
        if where == "collection":
            expected = pytest.raises(RuntimeError, match="lost its GPU context")
        else:
            expected = pytest.raises(KeyboardInterrupt, match="signal SIGTERM")
    previous = signal.signal(signal.SIGTERM, _raise_stop_requested)
    try:
        with expected:
            stopped.train()
    finally:
        signal.signal(signal.SIGTERM, previous)
    checkpoints = stopped.run_state.checkpoints.checkpoints()
    assert [path.name for path in checkpoints] == ["checkpoint-000000000003"]  # keep=1 kept the good one

    resumed = make_trainer(tmp_path / "split", total_frames=total)
    resumed.load_checkpoint(checkpoints[-1])
    assert_same_histories(uninterrupted, resumed.train())


def test_resume_without_simulator_state_restarts_episodes_and_says_so(tmp_path, caplog):
    first = make_trainer(tmp_path, total_frames=2 * NUM_ENVS * STEPS)
    first.train()
    resumed = make_trainer(tmp_path, total_frames=3 * NUM_ENVS * STEPS)
    resumed.run_state.rollout.simulator = None  # as for an env that exposes no state (Isaac Lab)
    with caplog.at_level("WARNING", logger="diffrl.training"):
        resumed.load_checkpoint(first.run_state.checkpoints.latest())
    assert "resumed episodes restart from a reset" in caplog.text
    assert resumed.train()[-1]["frames"] == 192.0


KILLED_SAVE = """
import os, signal, sys
sys.path.insert(0, {tests!r})
from pathlib import Path
from test_on_policy import make_trainer


class KilledWhileSaving:
    calls = 0

    def state_dict(self):  # read first by the finite check, then written last (name order): the rest is on disk
        KilledWhileSaving.calls += 1
        if KilledWhileSaving.calls == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        return dict()

    def load_state_dict(self, state):
        pass


trainer = make_trainer(Path({run!r}), total_frames=1)
trainer.progress.iteration = 3
trainer.run_state.checkpoint.register("zz_killed_while_saving", KilledWhileSaving())
trainer.run_state.save()
"""


def test_a_save_killed_midway_leaves_the_previous_checkpoint_intact(tmp_path):
    trainer = make_trainer(tmp_path, total_frames=2 * NUM_ENVS * STEPS)
    trainer.train()
    previous = trainer.run_state.checkpoints.latest()
    script = KILLED_SAVE.format(tests=str(Path(__file__).parent), run=str(tmp_path))
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
    staged = [path for path in tmp_path.iterdir() if path.name.startswith(".")]
    assert staged, "the killed save had started writing (into a hidden staging directory)"
    assert trainer.run_state.checkpoints.latest() == previous
    assert [path.name for path in trainer.run_state.checkpoints.checkpoints()] == [previous.name]
    resumed = make_trainer(tmp_path, total_frames=3 * NUM_ENVS * STEPS)
    resumed.load_checkpoint(previous)
    assert resumed.progress.iteration == 2


def test_an_incompatible_checkpoint_is_a_clear_error(tmp_path):
    trainer = make_trainer(tmp_path, total_frames=2 * NUM_ENVS * STEPS)
    trainer.train()
    other = make_trainer(tmp_path / "other", total_frames=1, hidden=32)
    latest = trainer.run_state.checkpoints.latest()
    with pytest.raises(ValueError, match=rf"(?s)cannot resume from checkpoint {latest}: .*size mismatch"):
        other.load_checkpoint(latest)


def test_a_checkpoint_of_another_algorithm_or_task_is_refused_by_name(tmp_path):
    trainer = make_trainer(tmp_path, total_frames=NUM_ENVS * STEPS, identity={"algorithm": "ppo", "task": "Hopper-v5"})
    trainer.train()
    other = make_trainer(tmp_path / "other", total_frames=1, identity={"algorithm": "genpo", "task": "Hopper-v5"})
    with pytest.raises(ValueError, match="it is a run of algorithm 'ppo', and this run is algorithm 'genpo'"):
        other.load_checkpoint(trainer.run_state.latest())


class NaNRewardForEnv(Transform):
    """Makes env ``index``'s reward NaN from the ``after``-th step on (a broken reward term)."""

    def __init__(self, index: int, after: int) -> None:
        super().__init__(in_keys=["reward"], out_keys=["reward"])
        self.index, self.after, self.steps = index, after, 0

    def _step(self, tensordict, next_tensordict):
        self.steps += 1
        if self.steps > self.after:
            reward = next_tensordict["reward"].clone()
            reward[self.index] = float("nan")
            next_tensordict["reward"] = reward
        return next_tensordict


def test_a_nan_reward_is_named_with_its_env_before_any_update(tmp_path):
    trainer = make_trainer(tmp_path, total_frames=4 * NUM_ENVS * STEPS)
    trainer.env.append_transform(NaNRewardForEnv(index=2, after=STEPS + 3))  # in the second rollout
    before = [parameter.detach().clone() for parameter in trainer.update.loss_module.parameters()]
    with pytest.raises(
        NumericalError, match=r"reward from the env is not finite for 13 of 64 samples; first at env 2, step 3"
    ):
        trainer.train()
    assert trainer.progress.iteration == 1  # the first iteration completed, the second never updated
    checkpoint = trainer.run_state.latest()
    assert checkpoint.name == "checkpoint-000000000001"
    resumed = make_trainer(tmp_path, total_frames=1)
    resumed.load_checkpoint(checkpoint)
    after_first = list(resumed.update.loss_module.parameters())
    assert all(torch.isfinite(parameter).all() for parameter in after_first)
    assert any(not torch.equal(b, a) for b, a in zip(before, after_first, strict=True))


class NaNObservationForEnv(Transform):
    """Makes env ``index``'s observation NaN at its ``at``-th step (a broken sensor), before any normalizer."""

    def __init__(self, index: int, at: int) -> None:
        super().__init__(in_keys=["observation"], out_keys=["observation"])
        self.index, self.at, self.steps = index, at, 0

    def _step(self, tensordict, next_tensordict):
        self.steps += 1
        if self.steps == self.at:
            observation = next_tensordict["observation"].clone()
            observation[self.index, 3] = float("nan")
            next_tensordict["observation"] = observation
        return next_tensordict


def test_a_nan_observation_is_named_with_its_env_before_it_reaches_the_normalizer(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the NaN observation's action reaches MuJoCo, which logs it to MUJOCO_LOG.TXT here
    trainer = make_trainer(tmp_path, total_frames=4 * NUM_ENVS * STEPS, keep_checkpoints=1)
    trainer.env.insert_transform(0, NaNObservationForEnv(index=1, at=STEPS + 5))  # the env's own output
    with pytest.raises(
        NumericalError,
        match=r"observation 'observation' from the env, before normalization .* is not finite for 1 of \d+ samples; "
        r"first at index 1 of check \d+",
    ):
        trainer.train()
    assert [path.name for path in trainer.run_state.checkpoints.checkpoints()] == ["checkpoint-000000000001"]
    resumed = make_trainer(tmp_path, total_frames=1)
    resumed.load_checkpoint(trainer.run_state.latest())
    _, mean, second_moment = resumed.observation_normalizer.statistics()
    assert all(bool(entry.isfinite().all()) for entry in (*mean.values(), *second_moment.values()))


def test_a_nan_final_observation_is_named_without_a_normalizer(tmp_path):
    # Env 1's 20-step episode ends at the second rollout's step 3: its NaN final observation is replaced by
    # the reset one, so only the critic's bootstrap would have read it.
    trainer = make_trainer(tmp_path, total_frames=4 * NUM_ENVS * STEPS, normalize_observations=False)
    trainer.env.insert_transform(0, NaNObservationForEnv(index=1, at=20))
    with pytest.raises(
        NumericalError,
        match=r"next observation 'observation' from the env is not finite for 1 of 64 samples; "
        r"first at env 1, step 3",
    ):
        trainer.train()
    assert trainer.progress.iteration == 1


def test_checks_off_lets_the_run_go_on_but_never_checkpoints_non_finite_weights(tmp_path, caplog, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MuJoCo logs the NaN controls to MUJOCO_LOG.TXT in the working directory
    trainer = make_trainer(tmp_path, total_frames=3 * NUM_ENVS * STEPS, check_numerics=False)
    trainer.env.append_transform(NaNRewardForEnv(index=0, after=STEPS + 3))
    # No check: the NaN reaches the update and the weights, as asked; the checkpoint is refused.
    with (
        caplog.at_level("ERROR", logger="diffrl.training"),
        pytest.raises(NumericalError, match=r"the checkpoint of iteration 2 holds NaN/inf in .*not written"),
    ):
        trainer.train()
    assert trainer.progress.iteration == 2
    assert "the state after iteration 2 holds NaN/inf" in caplog.text  # nor is the crash checkpoint written
    assert trainer.run_state.latest() is None


def test_compiled_collection_trains_and_the_compiled_policy_equals_the_eager_one(tmp_path):
    from tensordict import TensorDict
    from torchrl.envs.utils import ExplorationType, set_exploration_type

    trainer = make_trainer(tmp_path, total_frames=2 * NUM_ENVS * STEPS, compile_policy=True)
    history = trainer.train()
    assert [entry["frames"] for entry in history] == [64.0, 128.0]
    assert all(math.isfinite(entry[key]) for entry in history for key in ("kl_approx", "loss_objective"))
    # Inductor draws its own random numbers, so rollouts differ; the deterministic policy must not.
    actor = trainer.update.actor
    observation = TensorDict({"observation": torch.randn(5, actor.obs_dim)}, batch_size=[5])
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        eager = actor(observation.clone())["action"]
        compiled = torch.compile(actor)(observation.clone())["action"]
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_compiled_networks_train_and_compute_what_the_eager_ones_do(tmp_path):
    from diffrl.training.compilation import compile_networks

    trainer = make_trainer(tmp_path, total_frames=2 * NUM_ENVS * STEPS)
    flow = trainer.update.actor.flow
    observation, noise = torch.randn(5, flow.obs_dim), torch.randn(5, 2 * flow.action_dim)
    with torch.no_grad():
        eager = flow(noise, observation)
    assert compile_networks(trainer.update.loss_module) == 3  # the velocity trunk, the flow map, the critic MLP
    with torch.no_grad():
        torch.testing.assert_close(flow(noise, observation), eager, rtol=1e-5, atol=1e-6)
    history = trainer.train()
    assert all(math.isfinite(entry[key]) for entry in history for key in ("kl_approx", "loss_objective", "grad_norm"))
