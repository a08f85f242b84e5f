"""The training loop and its parts: update rules of both families, run state, torchrun, MLflow tracking."""

from diffrl.training.on_policy import OnPolicyTrainer
from diffrl.training.pathwise_update import PathwiseUpdate
from diffrl.training.ppo_update import KLAdaptiveLearningRate, PPOUpdate
from diffrl.training.run_directory import RunDirectory
from diffrl.training.run_state import RunState, TrainingProgress
from diffrl.training.update_rule import UpdateRule

__all__ = [
    "KLAdaptiveLearningRate",
    "OnPolicyTrainer",
    "PPOUpdate",
    "PathwiseUpdate",
    "RunDirectory",
    "RunState",
    "TrainingProgress",
    "UpdateRule",
]
