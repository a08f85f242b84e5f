"""The training loop and its parts: update rules, run state, torchrun data parallelism, MLflow tracking."""

from diffrl.training.on_policy import OnPolicyTrainer
from diffrl.training.ppo_update import KLAdaptiveLearningRate, PPOUpdate
from diffrl.training.run_directory import RunDirectory
from diffrl.training.run_state import RunState, TrainingProgress
from diffrl.training.update_rule import UpdateRule

__all__ = [
    "KLAdaptiveLearningRate",
    "OnPolicyTrainer",
    "PPOUpdate",
    "RunDirectory",
    "RunState",
    "TrainingProgress",
    "UpdateRule",
]
