"""Every GenPO benchmark task with an offline stand-in: created on CPU, TorchRL's env checks, finite steps.

One env per task, made through the session cache of ``tests/conftest.py`` (Isaac Lab allows one
simulation per process; each creation after the first takes seconds). The recipe presets of
``recipes/config/task`` are checked with Hydra's compose API, without a simulator.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torchrl.envs.utils import check_env_specs

from diffrl.envs.offline_assets import OFFLINE_TASKS, stand_in_notes
from diffrl.training.pathwise_update import PathwiseUpdate

NUM_ENVS = 16
STEPS = 8
CONFIG_DIR = Path(__file__).parents[2] / "recipes" / "config"

# Preset -> (task id, a config change the record must name or None, obs dim, action dim): the
# dims are the tasks' own (the stand-ins have the same joints), with the observation groups the
# preset feeds (franka_lift: policy 100 + proprio 190 + perception 960).
# Cartpole with 16 envs comes last: the session cache then holds the env other test files reuse.
TASKS = {
    "ant": ("Isaac-Ant", None, 60, 8),
    "humanoid": ("Isaac-Humanoid", None, 87, 21),
    "anymal_d_flat": ("Isaac-Velocity-Flat-AnymalD", "ANYDRIVE_3_SIMPLE_ACTUATOR_CFG", 48, 12),
    "h1": ("Isaac-Velocity-Flat-H1", None, 69, 19),
    "go2": ("Isaac-Velocity-Flat-UnitreeGo2", None, 48, 12),
    "franka_reach": ("Isaac-Reach-Franka", "panda_finger2_passive", 32, 7),
    "franka_lift": ("Isaac-Lift-Franka", "panda_finger2_passive", 1250, 9),
    "franka_open_drawer": ("Isaac-Open-Drawer-Franka", "panda_finger2_passive", 31, 8),
    "quadcopter": ("Diffrl-Quadcopter-Direct", "no propeller joints", 12, 4),
    "shadow_hand": ("Isaac-Reorient-Cube-Shadow", None, 157, 20),
    "cartpole": ("Isaac-Cartpole", None, 4, 1),
}


@pytest.mark.slow
@pytest.mark.parametrize("preset", list(TASKS))
def test_task_runs_offline_and_steps_finite(isaaclab_env, preset):
    task, change, obs_dim, action_dim = TASKS[preset]
    # The env as the preset's recipe makes it: with the observation groups the preset feeds, if any.
    groups = OmegaConf.load(CONFIG_DIR / "task" / f"{preset}.yaml").env.get("observation_groups")
    env = isaaclab_env(task, NUM_ENVS, **({"observation_groups": tuple(groups)} if groups else {}))
    check_env_specs(env)
    record = env.isaaclab_assets
    assert record.source == "offline"
    # The stand-ins are named, robot first, and every config change is on record.
    assert record.stand_ins == stand_in_notes(task) and record.stand_ins
    if change is None:
        assert record.config_changes == ()
    else:
        assert any(change in line for line in record.config_changes), record.config_changes
    if preset == "anymal_d_flat":  # the change recorded is the one that ran
        assert type(env.base_env.unwrapped.cfg.scene.robot.actuators["legs"]).__name__ == "DCMotorCfg"
    with torch.no_grad():
        rollout = env.rollout(STEPS, break_when_any_done=False)
    assert rollout["observation"].shape == (NUM_ENVS, STEPS, obs_dim)
    assert rollout["action"].shape == (NUM_ENVS, STEPS, action_dim)
    for key in ("observation", ("next", "observation"), ("next", "reward")):
        assert torch.isfinite(rollout[key]).all(), key


# Preset -> (task id, steps per env, epochs, minibatches, learning rate, widths, normalization): the
# reference rsl_rl settings of isaaclab_tasks (agents/rsl_rl_ppo_cfg.py of each task).
REFERENCE = {
    "cartpole": ("Isaac-Cartpole", 16, 5, 4, 1e-3, [64, 64], False),
    "ant": ("Isaac-Ant", 32, 5, 4, 5e-4, [400, 200, 100], None),
    "humanoid": ("Isaac-Humanoid", 32, 5, 4, 5e-4, [400, 200, 100], True),
    "anymal_d_flat": ("Isaac-Velocity-Flat-AnymalD", 24, 5, 4, 1e-3, [128, 128, 128], False),
    "anymal_d_rough": ("Isaac-Velocity-Rough-AnymalD", 24, 5, 4, 1e-3, [512, 256, 128], False),
    "h1": ("Isaac-Velocity-Flat-H1", 24, 5, 4, 1e-3, [128, 128, 128], False),
    "go2": ("Isaac-Velocity-Flat-UnitreeGo2", 24, 5, 4, 1e-3, [128, 128, 128], False),
    "franka_reach": ("Isaac-Reach-Franka", 24, 8, 4, 1e-3, [64, 64], False),
    "franka_lift": ("Isaac-Lift-Franka", 32, 5, 4, 1e-3, [512, 256, 128], True),
    "franka_open_drawer": ("Isaac-Open-Drawer-Franka", 96, 5, 4, 5e-4, [256, 128, 64], False),
    "shadow_hand": ("Isaac-Reorient-Cube-Shadow", 16, 5, 4, 5e-4, [512, 512, 256, 128], True),
    # diffrl's own task: Isaac Lab 2.x's QuadcopterPPORunnerCfg (the task left Isaac Lab in 3.0).
    "quadcopter": ("Diffrl-Quadcopter-Direct", 24, 5, 4, 5e-4, [64, 64], False),
}
RECIPES = ("genpo_isaaclab", "trudi_isaaclab", "reppo_isaaclab", "dppo_isaaclab", "ppo_isaaclab")
# The recipes whose algorithm trains with the pathwise family's update (the rest: the PPO family's).
PATHWISE_RECIPES = {"trudi_isaaclab", "reppo_isaaclab"}


def _compose(recipe: str, overrides: list[str]):
    from hydra import compose, initialize_config_dir

    from diffrl.training.recipe import register_configs

    register_configs()

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        return compose(config_name=recipe, overrides=overrides)


def test_every_isaaclab_task_preset_is_checked_here():
    presets = {path.stem for path in (CONFIG_DIR / "task").glob("*.yaml")}
    assert presets - {"halfcheetah", "ant_v5"} - set(FPO_PRESETS) == set(REFERENCE)
    # Every offline-covered GenPO task has a preset that the env test above creates.
    assert {REFERENCE[p][0] for p in TASKS} <= set(OFFLINE_TASKS)


@pytest.mark.parametrize("recipe", RECIPES)
@pytest.mark.parametrize("preset", list(REFERENCE))
def test_task_preset_composes_with_reference_settings(recipe, preset):
    task, steps, epochs, minibatches, lr, widths, normalize = REFERENCE[preset]
    cfg = _compose(recipe, [f"task={preset}", "env.num_envs=64", "env.device=cpu"])
    assert cfg.env.backend == "isaaclab" and cfg.env.task == task and cfg.env.num_envs == 64
    assert cfg.collector.steps_per_env == steps
    update = cfg.trainer
    if recipe in PATHWISE_RECIPES:
        # A preset's schedule applies to both families; what it leaves out the pathwise update takes
        # from its own defaults (the authors': 4 epochs x 64 minibatches, lr 3e-4).
        preset_schedule = OmegaConf.load(CONFIG_DIR / "task" / f"{preset}.yaml").get("trainer", {})
        defaults = PathwiseUpdate.__init__.__kwdefaults__
        epochs, minibatches, lr = (
            preset_schedule.get(key, defaults[key]) for key in ("num_epochs", "num_minibatches", "learning_rate")
        )
        assert update._target_ == "diffrl.training.pathwise_update.PathwiseUpdate"
    assert (update.num_epochs, update.num_minibatches, update.learning_rate) == (epochs, minibatches, lr)
    assert list(cfg.algorithm.hidden_sizes) == widths and list(cfg.algorithm.critic_hidden_sizes) == widths
    if normalize is not None:  # the Ant preset keeps each algorithm's own default
        assert cfg.algorithm.normalize_observations is normalize
    assert cfg.algorithm.name == recipe.removesuffix("_isaaclab")


# FPO++ preset -> (its base preset, pairs, epochs, iterations): the authors' per-robot settings
# (amazon-far/fpo-control task_cfgs.py), on top of 24 steps x 4096 envs, 4 minibatches, AdamW 1e-4.
FPO_PRESETS = {"go2_fpo": ("go2", 16, 16, 1500), "h1_fpo": ("h1", 32, 32, 2000)}


@pytest.mark.parametrize("preset", list(FPO_PRESETS))
def test_fpo_presets_carry_the_published_settings(preset):
    base, pairs, epochs, iterations = FPO_PRESETS[preset]
    cfg = _compose("fpo_isaaclab", [f"task={preset}"])
    assert cfg.env.task == REFERENCE[base][0] and cfg.env.num_envs == 4096 and cfg.collector.steps_per_env == 24
    assert cfg.collector.total_frames == iterations * 24 * 4096
    assert cfg.algorithm.actor.num_cfm_pairs == pairs and cfg.algorithm.normalize_observations is True
    assert list(cfg.algorithm.hidden_sizes) == [256] * 3 and list(cfg.algorithm.critic_hidden_sizes) == [768] * 3
    update = cfg.trainer
    assert (update.num_epochs, update.num_minibatches, update.learning_rate) == (epochs, 4, 1e-4)
    assert (update.adaptive_lr, update.weight_decay, update.ema_decay, update.ema_warmup_updates) == (
        False, 1e-4, 0.95, 500
    )  # fmt: skip
    assert cfg.algorithm.loss.clip_epsilon == 0.05 and cfg.algorithm.loss.trust_region == "aspo"


def test_the_algorithm_picks_its_family_s_trainer_in_any_recipe():
    assert _compose("trudi_isaaclab", []).trainer._target_.endswith("PathwiseUpdate")
    assert _compose("trudi_isaaclab", ["algorithm=trudi_ppo"]).trainer._target_.endswith("PPOUpdate")
    assert _compose("genpo_isaaclab", ["algorithm=reppo"]).trainer._target_.endswith("PathwiseUpdate")
    assert _compose("genpo_isaaclab", []).trainer._target_.endswith("PPOUpdate")


def test_unknown_task_preset_is_rejected_listing_the_presets():
    from hydra.errors import MissingConfigException

    with pytest.raises(MissingConfigException) as error:
        _compose("genpo_isaaclab", ["task=anymal"])
    assert "anymal_d_flat" in str(error.value) and "franka_reach" in str(error.value)


def _stage(root: Path, asset):
    from pxr import Usd

    stage = Usd.Stage.Open(str(root / asset.path))
    assert stage.GetDefaultPrim().IsValid(), f"{asset.path} has no valid default prim (Isaac Lab references it)"
    return stage


def test_light_tasks_build_without_the_converter(tmp_path, monkeypatch):
    import diffrl.envs.offline_assets as offline

    def no_converter(files):
        raise AssertionError(f"Cartpole/Ant/Humanoid must not convert anything ({files.describe()})")

    monkeypatch.setattr(offline, "convert", no_converter)
    root = offline.build_offline_assets(tmp_path / "root", tasks=["Isaac-Cartpole", "Isaac-Ant", "Isaac-Humanoid"])
    from pxr import UsdPhysics

    humanoid = _stage(root, offline.HUMANOID)  # kept: a traversal must not outlive its stage
    joints = {p.GetName() for p in humanoid.Traverse() if p.IsA(UsdPhysics.Joint)}
    assert {"pelvis", "left_shin", "right_shin", "left_lower_arm", "right_lower_arm"} <= joints
    assert not {"abdomen_x", "left_knee", "right_elbow"} & joints


def test_converted_robots_match_the_names_and_structure_the_tasks_address(tmp_path):
    from pxr import UsdPhysics

    import diffrl.envs.offline_assets as offline

    root = offline.build_offline_assets(tmp_path / "root", tasks=["Isaac-Cartpole"])
    cartpole = root / offline.CARTPOLE.path
    built_at = cartpole.stat().st_mtime_ns
    # Adding tasks keeps the files that are current.
    tasks = ["Isaac-Velocity-Flat-UnitreeGo2", "Isaac-Velocity-Flat-AnymalD", "Isaac-Velocity-Flat-H1"]
    offline.build_offline_assets(root, tasks=[*tasks, "Isaac-Reach-Franka"])
    assert cartpole.stat().st_mtime_ns == built_at
    marker = (root / ".diffrl_offline_assets.json").read_text()
    assert "genesis-world==1.4.5" in marker and "playground==0.2.0" in marker and "urdf-usd-converter==0.3.4" in marker

    expected = {
        offline.GO2: ({"FL_hip_joint", "RR_calf_joint"}, {"base", "FL_foot", "RR_calf"}),
        offline.ANYMAL_D: ({"LF_HAA", "RH_KFE"}, {"base", "LF_FOOT", "RH_SHANK"}),
        offline.H1_MINIMAL: ({"torso", "left_ankle", "right_elbow"}, {"pelvis", "torso_link", "left_ankle_link"}),
    }
    for asset, (joint_names, body_names) in expected.items():
        stage = _stage(root, asset)
        robot = stage.GetDefaultPrim()
        joints = [p for p in stage.Traverse() if p.IsA(UsdPhysics.Joint)]
        assert joint_names <= {p.GetName() for p in joints}, asset.path
        # Bodies are children of the robot prim (Robot/<body>) and the base floats (no world joint).
        children = {c.GetName() for c in robot.GetChildren() if c.HasAPI(UsdPhysics.RigidBodyAPI)}
        assert body_names <= children, asset.path
        assert all(UsdPhysics.Joint(p).GetBody0Rel().GetTargets() for p in joints), asset.path
        for joint in joints:  # no revolute joint is locked (ANYmal-C's URDF gives none limits)
            if joint.IsA(UsdPhysics.RevoluteJoint):
                lower, upper = (joint.GetAttribute(f"physics:{k}Limit").Get() for k in ("lower", "upper"))
                assert upper > lower, (asset.path, joint.GetName())

    panda = _stage(root, offline.FRANKA)
    prims = {p.GetName(): p for p in panda.Traverse()}
    assert "panda_link8" not in prims and "panda_hand" in prims
    assert str(prims["panda_rightfinger"].GetPath()).endswith("panda_link7/panda_hand/panda_rightfinger")
    for name in ("panda_joint1", "panda_joint7", "panda_finger_joint2"):
        assert prims[name].HasAPI(UsdPhysics.DriveAPI), name


def test_concurrent_builds_of_different_tasks_keep_every_file(tmp_path):
    # Each builder swaps in a whole new root; without the per-root lock a builder for one task
    # replaced the root another was filling and its files went missing.
    import subprocess
    import sys

    root = tmp_path / "root"
    script = (
        "import sys; from diffrl.envs.offline_assets import build_offline_assets\n"
        "build_offline_assets(sys.argv[1], tasks=[sys.argv[2]])"
    )
    tasks = ["Isaac-Cartpole", "Isaac-Ant", "Isaac-Humanoid"] * 2
    builders = [subprocess.Popen([sys.executable, "-c", script, str(root), task]) for task in tasks]
    assert [builder.wait(timeout=300) for builder in builders] == [0] * len(tasks)
    from diffrl.envs.offline_assets import _recorded

    expected = {asset.path for task in set(tasks) for asset in OFFLINE_TASKS[task]}
    assert expected <= set(_recorded(root))
    assert all((root / path).is_file() for path in expected)
