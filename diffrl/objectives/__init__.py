"""Losses (GenPO, TruDi-PPO), their shared base, trust-region projections and KL / entropy estimators."""

from diffrl.numerics import NumericalError
from diffrl.objectives.exact_ratio_ppo import ExactRatioPPOLoss
from diffrl.objectives.genpo import GenPOLoss
from diffrl.objectives.trudi import TruDiLoss

__all__ = ["ExactRatioPPOLoss", "GenPOLoss", "NumericalError", "TruDiLoss"]
