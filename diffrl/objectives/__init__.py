"""Losses of both update families, their shared parts, trust-region projections and KL / entropy estimators.

Likelihood-ratio family: GenPO, TruDi-PPO, DPPO (on :class:`ExactRatioPPOLoss`; the last two on
:class:`DenoisingChainPPOLoss`). Pathwise family: REPPO and TruDi
(on :class:`PathwiseTrustRegionLoss`, with the :class:`SoftLambdaReturn` value estimator).
"""

from diffrl.numerics import NumericalError
from diffrl.objectives.denoising_chain_ppo import DenoisingChainPPOLoss
from diffrl.objectives.dppo import DPPOLoss
from diffrl.objectives.exact_ratio_ppo import ExactRatioPPOLoss
from diffrl.objectives.fpo import FPOPlusPlusLoss
from diffrl.objectives.generative_ppo import GenerativePPOLoss
from diffrl.objectives.genpo import GenPOLoss
from diffrl.objectives.pathwise import PathwiseTrustRegionLoss
from diffrl.objectives.reppo import REPPOLoss
from diffrl.objectives.soft_lambda_return import SoftLambdaReturn, soft_lambda_return
from diffrl.objectives.trudi import TruDiLoss
from diffrl.objectives.trudi_ppo import TruDiPPOLoss

__all__ = [
    "DPPOLoss",
    "DenoisingChainPPOLoss",
    "ExactRatioPPOLoss",
    "FPOPlusPlusLoss",
    "GenPOLoss",
    "GenerativePPOLoss",
    "NumericalError",
    "PathwiseTrustRegionLoss",
    "REPPOLoss",
    "SoftLambdaReturn",
    "TruDiLoss",
    "TruDiPPOLoss",
    "soft_lambda_return",
]
