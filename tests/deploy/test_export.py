"""Exported GenPO, TruDi-PPO, TruDi (DIME), REPPO and Gaussian policies act as the torch actors do, without diffrl
or torchrl.

The reference is the library's own path, independent of the exporter: the run's observation
normalizer applied as a transform, then the actor's ``forward`` (its own sampler) with
``torch.randn`` made to return the same noise the exported model is given.

Tolerance 1e-5: float32 round-off through a few unrolled network passes (seen ≤ 3e-6 with
onnxruntime, ≤ 1e-6 with TorchScript), far below any real mismatch (a wrong step, time or
normalization moves actions by ≥ 1e-2). TruDi's epsilon parameterization divides by √ᾱ_K
(x̂_0 = (x_K − √(1−ᾱ_K) ε̂)/√ᾱ_K; 1/√ᾱ_K ≈ 64 for the cosine schedule with K = 3), which amplifies every
float32 round-off by that factor: the torch actor itself is 4e-5 away from a float64 computation.
Its tolerance is 1e-5/√ᾱ_K (seen: 2.4e-5).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch
from tensordict import TensorDict
from torchrl.envs import TransformedEnv
from torchrl.envs.utils import ExplorationType, set_exploration_type

from diffrl.deploy.export import CONTRACT_FILE, FILE_NAMES, export_policy, normalization_affine
from diffrl.deploy.policy_loading import LoadedPolicy, load_policy
from diffrl.envs.gym import make_gym_env
from diffrl.envs.observation_normalizer import ObservationNormalizer
from diffrl.modules.cfm_flow import CFMFlow
from diffrl.modules.denoising_chain import DenoisingChain
from diffrl.modules.dime_actor import DIMEActor
from diffrl.modules.fpo_actor import FPOActor
from diffrl.modules.gaussian_actor import GaussianActor
from diffrl.modules.genpo_actor import GenPOActor
from diffrl.modules.genpo_flow import GenPOFlow
from diffrl.modules.squashed_gaussian_actor import SquashedGaussianActor
from diffrl.modules.trudi_actor import TruDiActor

OBS_DIM, ACTION_DIM = 17, 6  # HalfCheetah-v5, whose observations fill the normalizer
TOLERANCE = 1e-5
BATCH = 64  # not the exporter's example batch (3): the batch axis must be dynamic


def make_actor(kind: str):
    torch.manual_seed(1)
    if kind == "genpo":
        return GenPOActor(GenPOFlow(ACTION_DIM, OBS_DIM, num_steps=3, hidden_sizes=[32, 32]))
    if kind == "trudi":  # the recipe's settings, plus tanh squash and learned stds
        chain = DenoisingChain(
            ACTION_DIM, OBS_DIM, num_steps=4, hidden_sizes=[32], parameterization="mean", min_std=0.5, learn_std=True
        )
        return TruDiActor(chain, squash=True)
    if kind == "trudi_ddim":  # epsilon prediction with clipped x̂_0, DDIM variances
        return TruDiActor(
            DenoisingChain(ACTION_DIM, OBS_DIM, num_steps=3, hidden_sizes=[32], schedule="ddim", ddim_eta=0.5)
        )
    if kind == "dime":
        actor = DIMEActor(ACTION_DIM, OBS_DIM, num_steps=4, hidden_sizes=[32, 32])
        with torch.no_grad():  # a trained-looking control net (at init its output is ~1e-8)
            actor.control.mlp[-1].weight.normal_(0.0, 0.3)
        return actor
    if kind == "reppo":
        return SquashedGaussianActor(ACTION_DIM, OBS_DIM, hidden_sizes=[32])
    if kind == "fpo":
        return FPOActor(CFMFlow(ACTION_DIM, OBS_DIM, hidden_sizes=[32, 32], num_steps=8), action_noise_std=0.1)
    return GaussianActor(ACTION_DIM, OBS_DIM, hidden_sizes=[32], init_std=0.7)


KINDS = ["genpo", "trudi", "trudi_ddim", "dime", "reppo", "fpo", "gaussian"]
# kind -> the recipe algorithm whose actor it is ("trudi" is TruDi-PPO's denoising chain, "dime" TruDi's).
ALGORITHMS = {"genpo": "genpo", "trudi": "trudi_ppo", "trudi_ddim": "trudi_ppo", "dime": "trudi", "reppo": "reppo"}
ALGORITHMS["fpo"] = "fpo"
ALGORITHMS["gaussian"] = "ppo"
SQUASHED = {"trudi", "dime", "reppo"}


@pytest.fixture(scope="module")
def normalizer() -> ObservationNormalizer:
    normalizer = ObservationNormalizer.for_key("observation")
    env = TransformedEnv(make_gym_env("HalfCheetah-v5", num_envs=4, seed=0), normalizer)
    env.rollout(20, break_when_any_done=False)
    env.close()
    return normalizer.freeze()


def loaded_policy(kind: str, normalizer: ObservationNormalizer | None) -> LoadedPolicy:
    config = {
        "algorithm": {"name": ALGORITHMS[kind], "actor": {}},
        "env": {"task": "HalfCheetah-v5", "backend": "mujoco", "observation_key": "observation"},
    }
    return LoadedPolicy(make_actor(kind).eval(), normalizer, config, Path("test"), None, OBS_DIM, ACTION_DIM)


@pytest.fixture(scope="module", params=KINDS)
def exported(request, normalizer, tmp_path_factory):
    """Each actor exported once to both formats."""
    policy = loaded_policy(request.param, normalizer)
    result = export_policy(policy, tmp_path_factory.mktemp(request.param), log_to_mlflow=False)
    return request.param, policy, result


def tolerance(actor) -> float:
    """1e-5, times the epsilon parameterization's round-off amplification 1/√ᾱ_K (module docstring)."""
    if isinstance(actor, TruDiActor) and actor.chain.parameterization == "epsilon":
        return TOLERANCE / float(actor.chain.schedule.alphas_cumprod[-1].sqrt())
    return TOLERANCE


def injected_randn(draws: list[torch.Tensor]):
    """A stand-in for ``torch.randn`` that returns ``draws`` in order (checking their shapes)."""

    def randn(*shape, **kwargs):
        draw = draws.pop(0)
        assert tuple(draw.shape) == tuple(shape[0] if len(shape) == 1 else shape)
        return draw.clone()

    return randn


def run_with_noise(actor, td: TensorDict, draws: list[torch.Tensor]) -> TensorDict:
    original = torch.randn
    torch.randn = injected_randn(draws)
    try:
        actor(td)
    finally:
        torch.randn = original
    assert not draws
    return td


def reference_actions(policy: LoadedPolicy, observation: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The actor's own forward on normalized observations, its torch.randn draws replaced by ``noise``."""
    td = TensorDict({"observation": policy.normalize(observation)}, batch_size=observation.shape[:1])
    actor, batch = policy.actor, observation.shape[0]
    if isinstance(actor, GenPOActor):
        return run_with_noise(actor, td, [noise])["action"]
    if isinstance(actor, TruDiActor):  # DenoisingChain.sample draws x_K [B, d], then the step noises [K, B, d]
        steps = noise[:, ACTION_DIM:].reshape(batch, actor.num_steps, -1).movedim(1, 0)
        return run_with_noise(actor, td, [noise[:, :ACTION_DIM], steps])["action"]
    if isinstance(actor, DIMEActor):  # exported in ODE mode: the deterministic forward's one prior draw x_0/σ_p
        with set_exploration_type(ExplorationType.DETERMINISTIC):
            return run_with_noise(actor, td, [noise])["action"]
    if isinstance(actor, FPOActor):  # x_1, the action noise, then the (ε, t) pairs' ε (not part of the action)
        pairs = torch.zeros(batch, actor.num_cfm_pairs, ACTION_DIM)
        return run_with_noise(actor, td, [noise[:, :ACTION_DIM], noise[:, ACTION_DIM:], pairs])["action"]
    if isinstance(actor, SquashedGaussianActor):
        mean, std = actor.base_distribution(td["observation"])
        return (mean + std * noise).tanh()
    # The Gaussian's sample is loc + scale · ε: read loc and scale off the actor itself.
    actor(td)
    return td["loc"] + td["scale"] * noise


def inputs(policy_noise_dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    observation = 2.0 * torch.randn(BATCH, OBS_DIM, generator=generator)
    return observation, torch.randn(BATCH, policy_noise_dim, generator=generator)


def noise_dim(result) -> int:
    return result.contract["inputs"][1]["shape"][1]


def load_onnx(path: Path) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    session = onnxruntime.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])

    def run(observation: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        (action,) = session.run(["action"], {"observation": observation.numpy(), "noise": noise.numpy()})
        return torch.from_numpy(action)

    return run


def load_torchscript(path: Path) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    return torch.jit.load(os.fspath(path))


LOADERS = {"onnx": load_onnx, "torchscript": load_torchscript}


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_exported_policy_matches_the_actor_driven_by_the_same_noise(exported, fmt):
    kind, policy, result = exported
    exported_policy = LOADERS[fmt](result.files[fmt])
    difference = 0.0
    for seed in range(5):  # 5 x 64 random observations and noises
        observation, noise = inputs(noise_dim(result), seed=seed)
        expected = reference_actions(policy, observation, noise)
        actual = exported_policy(observation, noise)
        assert actual.shape == (BATCH, ACTION_DIM)
        difference = max(difference, float((actual - expected).abs().max()))
    print(f"{kind} {fmt}: max abs difference {difference:.1e}")  # the figures in docs/deploy.md (pytest -s)
    assert difference <= tolerance(policy.actor), kind


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_zero_noise_gives_the_deterministic_action(exported, fmt):
    kind, policy, result = exported
    observation, _ = inputs(noise_dim(result), seed=5)
    td = TensorDict({"observation": policy.normalize(observation)}, batch_size=[BATCH])
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        if isinstance(policy.actor, DIMEActor):  # its ODE mode draws x_0: zeros start it at x_0 = 0
            expected = run_with_noise(policy.actor, td, [torch.zeros(BATCH, ACTION_DIM)])["action"]
        else:
            expected = policy.actor(td)["action"]
    actual = LOADERS[fmt](result.files[fmt])(observation, torch.zeros(BATCH, noise_dim(result)))
    difference = float((actual - expected).abs().max())
    print(f"{kind} {fmt}: zero noise, max abs difference to the deterministic action {difference:.1e}")
    assert difference <= tolerance(policy.actor), kind


def test_baked_normalization_matches_the_normalizer(normalizer):
    policy = loaded_policy("genpo", normalizer)
    loc, scale = normalization_affine(policy)
    observation = 3.0 * torch.randn(256, OBS_DIM, generator=torch.Generator().manual_seed(4))
    expected = policy.normalize(observation)
    assert not torch.allclose(expected, observation, atol=0.1)  # the statistics are not an identity
    # A few float32 ulps: normalized values reach ~50 here (observations far outside the statistics).
    torch.testing.assert_close((observation - loc) / scale, expected, rtol=1e-6, atol=1e-6)


def test_contract_names_shapes_and_normalizer(exported):
    kind, _, result = exported
    contract = json.loads(result.contract_path.read_text())
    assert result.contract_path.name == CONTRACT_FILE
    assert contract["files"] == FILE_NAMES
    assert [(io["name"], io["dtype"]) for io in contract["inputs"]] == [
        ("observation", "float32"),
        ("noise", "float32"),
    ]
    assert contract["inputs"][0]["shape"] == ["batch", OBS_DIM]
    expected_noise = {
        "genpo": 2 * ACTION_DIM,
        "trudi": 5 * ACTION_DIM,
        "trudi_ddim": 4 * ACTION_DIM,
        "fpo": 2 * ACTION_DIM,
    }
    assert contract["inputs"][1]["shape"] == ["batch", expected_noise.get(kind, ACTION_DIM)]
    assert contract["outputs"] == [{**contract["outputs"][0], "name": "action", "shape": ["batch", ACTION_DIM]}]
    assert contract["action"]["range"] == ([-1.0, 1.0] if kind in SQUASHED else None)
    assert len(contract["observation_normalizer"]["loc"]) == OBS_DIM
    session = onnxruntime.InferenceSession(os.fspath(result.files["onnx"]), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["observation", "noise"]
    assert [o.name for o in session.get_outputs()] == ["action"]


ONNX_ONLY = """
    import sys
    import numpy as np
    import onnxruntime
    session = onnxruntime.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
    data = np.load(sys.argv[2])
    (action,) = session.run(None, {"observation": data["observation"], "noise": data["noise"]})
    np.save(sys.argv[3], action)
    assert not {"diffrl", "torchrl", "tensordict", "torch"} & set(sys.modules), sorted(sys.modules)
"""
TORCH_ONLY = """
    import sys
    import numpy as np
    import torch
    policy = torch.jit.load(sys.argv[1])
    data = np.load(sys.argv[2])
    action = policy(torch.from_numpy(data["observation"]), torch.from_numpy(data["noise"]))
    np.save(sys.argv[3], action.numpy())
    assert not {"diffrl", "torchrl", "tensordict"} & set(sys.modules), sorted(sys.modules)
"""


@pytest.mark.parametrize(("fmt", "script"), [("onnx", ONNX_ONLY), ("torchscript", TORCH_ONLY)])
def test_exported_policy_runs_without_diffrl_or_torchrl(exported, fmt, script, tmp_path):
    kind, policy, result = exported
    if kind != "trudi":
        pytest.skip("one actor suffices: the runtime needs are the same for all")
    observation, noise = inputs(noise_dim(result), seed=6)
    np.savez(tmp_path / "inputs.npz", observation=observation.numpy(), noise=noise.numpy())
    command = [sys.executable, "-I", "-c", textwrap.dedent(script), os.fspath(result.files[fmt])]
    command += [os.fspath(tmp_path / "inputs.npz"), os.fspath(tmp_path / "action.npy")]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr[-3000:]
    action = torch.from_numpy(np.load(tmp_path / "action.npy"))
    assert (action - reference_actions(policy, observation, noise)).abs().max() <= tolerance(policy.actor)


def test_unknown_format_is_a_clear_error(normalizer):
    with pytest.raises(ValueError, match=r"unknown export format.*'tflite'.*choose from \['onnx', 'torchscript'\]"):
        export_policy(loaded_policy("genpo", normalizer), formats=["onnx", "tflite"], log_to_mlflow=False)


def test_missing_or_corrupted_sources_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_policy(tmp_path / "nowhere")
    (tmp_path / "empty_run" / "checkpoints").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"neither policy\.pt nor a checkpoint"):
        load_policy(tmp_path / "empty_run")
    broken = tmp_path / "broken_run"
    (broken / "checkpoints" / "checkpoint-000000000010").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"checkpoint-000000000010 is not a TorchRL checkpoint"):
        load_policy(broken)
    (broken / "policy.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match=r"cannot read the policy file .*broken_run/policy.pt"):
        load_policy(broken)
    torch.save({"something": 1}, broken / "policy.pt")
    with pytest.raises(ValueError, match="is not a diffrl policy file"):
        load_policy(broken / "policy.pt")
    with pytest.raises(ValueError, match="neither a run directory"):
        load_policy(tmp_path)


@pytest.mark.parametrize(
    "recipe", ["genpo_isaaclab", "trudi_isaaclab", "reppo_isaaclab", "fpo_isaaclab", "ppo_isaaclab"]
)
def test_load_policy_rebuilds_what_a_run_saved(recipe, tmp_path):
    """policy.pt and a checkpoint, written as a training run writes them, come back as the same actor and normalizer."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate
    from omegaconf import OmegaConf
    from torchrl.checkpoint import Checkpoint

    from diffrl.training.experiment import actor_dimensions, save_policy
    from diffrl.training.recipe import register_configs

    register_configs()
    overrides = ["task=halfcheetah", "algorithm.hidden_sizes=[16,16]", "algorithm.normalize_observations=true"]
    with initialize_config_dir(str(Path(__file__).resolve().parents[2] / "recipes" / "config"), version_base="1.3"):
        cfg = compose(recipe, overrides=overrides)
    dims = {"action_dim": ACTION_DIM, "obs_dim": OBS_DIM}
    actor_cfg = cfg.algorithm.actor
    actor = instantiate(actor_cfg, observation_key="observation", **actor_dimensions(actor_cfg, **dims))
    normalizer = ObservationNormalizer.for_key("observation")
    env = TransformedEnv(make_gym_env("HalfCheetah-v5", num_envs=2, seed=0), normalizer)
    env.rollout(5, break_when_any_done=False)
    env.close()
    # As run_experiment and OnPolicyTrainer write them (the trainer's checkpoint has more components).
    run_dir = tmp_path / "run"
    checkpoint = run_dir / "checkpoints" / "checkpoint-000000000001"
    Checkpoint(actor=actor, observation_normalizer=normalizer).save(checkpoint, metadata=dims)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    save_policy(tmp_path / "policy.pt", actor, normalizer, cfg, OBS_DIM, ACTION_DIM, iteration=1)

    observation = torch.randn(8, OBS_DIM)
    normalized = normalizer.freeze().normalize(TensorDict({"observation": observation}, [8]))["observation"]
    torch.manual_seed(7)  # TruDi's deterministic (ODE) mode still draws its start x_0
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        expected = actor(TensorDict({"observation": normalized}, [8]))["action"]
    for source in (tmp_path / "policy.pt", run_dir, checkpoint):
        loaded = load_policy(source)
        assert (loaded.algorithm, loaded.obs_dim, loaded.action_dim) == (cfg.algorithm.name, OBS_DIM, ACTION_DIM)
        assert type(loaded.actor) is type(actor)
        torch.testing.assert_close(loaded.normalize(observation), normalized, rtol=0, atol=0)
        torch.manual_seed(7)
        with set_exploration_type(ExplorationType.DETERMINISTIC):
            actual = loaded.actor(TensorDict({"observation": loaded.normalize(observation)}, [8]))["action"]
        torch.testing.assert_close(actual, expected, rtol=0, atol=0)

    # In a run directory, policy.pt ends the run unless a resumed run has checkpointed past it.
    save_policy(run_dir / "policy.pt", actor, normalizer, cfg, OBS_DIM, ACTION_DIM, iteration=1)
    assert load_policy(run_dir).source == run_dir / "policy.pt"
    save_policy(run_dir / "policy.pt", actor, normalizer, cfg, OBS_DIM, ACTION_DIM, iteration=0)
    assert load_policy(run_dir).source == checkpoint
    (run_dir / "policy.pt").unlink()

    # A damaged tensor file is an error naming it, not a silently different policy.
    tensor_file = sorted(checkpoint.glob("components/*-actor/state/*.memmap"))[-1]
    tensor_file.write_bytes(tensor_file.read_bytes()[:3])
    with pytest.raises(ValueError, match=rf"corrupted checkpoint: .*{tensor_file.name} has 3 bytes"):
        load_policy(checkpoint)


@pytest.mark.parametrize("warm", [True, False])
def test_a_checkpoint_deploys_the_actor_s_weight_average_once_warm(warm, tmp_path):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf
    from torchrl.checkpoint import Checkpoint

    from diffrl.training.actor_average import ActorAverage
    from diffrl.training.recipe import register_configs

    register_configs()
    with initialize_config_dir(str(Path(__file__).resolve().parents[2] / "recipes" / "config"), version_base="1.3"):
        overrides = ["task=halfcheetah", "algorithm.hidden_sizes=[32,32]", "trainer.ema_warmup_updates=1"]
        cfg = compose("fpo_isaaclab", overrides=overrides)
    actor = make_actor("fpo")
    average = ActorAverage(actor, decay=0.5, warmup_updates=1)
    average.step(actor)  # iteration 1: the copy
    if warm:
        with torch.no_grad():
            for parameter in actor.parameters():
                parameter.add_(1.0)
        average.step(actor)  # iteration 2: averaged, deployed
    run_dir = tmp_path / "run"
    checkpoint = run_dir / "checkpoints" / "checkpoint-000000000002"
    dims = {"action_dim": ACTION_DIM, "obs_dim": OBS_DIM}
    Checkpoint(actor=actor, actor_average=average).save(checkpoint, metadata=dims)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    loaded = load_policy(checkpoint).actor.state_dict()
    deployed = (average.average if warm else actor).state_dict()
    assert loaded.keys() == deployed.keys()
    assert all(torch.equal(loaded[key], deployed[key]) for key in loaded)
    if warm:  # and not the trained weights
        assert not torch.equal(loaded["flow.velocity_net.obs_in.weight"], actor.flow.velocity_net.obs_in.weight)


def test_robot_loop_in_the_docs_runs_as_written(exported, monkeypatch):
    kind, policy, result = exported
    if kind != "genpo":
        pytest.skip("one exported model suffices")
    page = (Path(__file__).resolve().parents[2] / "docs" / "deploy.md").read_text()
    (block,) = [block for block in re.findall(r"```python\n(.*?)```", page, flags=re.DOTALL) if "onnxruntime" in block]
    observation = inputs(noise_dim(result), seed=7)[0][0]
    sent, steps = [], iter([True, True, False])
    stand_ins = {
        "robot_is_running": lambda: next(steps),
        "read_sensors": lambda: observation.numpy(),
        "scale_like_the_env": lambda action: action,
        "send_to_actuators": sent.append,
    }
    monkeypatch.chdir(result.contract_path.parent)
    exec(compile(block, "docs/deploy.md", "exec"), {"__name__": "__docs__", **stand_ins})
    assert len(sent) == 2
    zeros = torch.zeros(1, noise_dim(result))
    expected = reference_actions(policy, observation.unsqueeze(0), zeros)[0]
    assert np.abs(sent[0] - expected.numpy()).max() <= TOLERANCE  # deterministic = True in the docs' loop
