"""Policy building blocks: GenPO's flow and actor, TruDi-PPO's denoising chain and actor, TruDi's DIME actor,
the Gaussian actors (PPO's, REPPO's squashed one), the value and Q critics. Every actor keeps the contract of
:mod:`diffrl.modules.generative_policy`."""

from diffrl.modules.cfm_flow import CFMFlow
from diffrl.modules.denoising_chain import DenoisingChain
from diffrl.modules.dime_actor import DIMEActor
from diffrl.modules.dime_control_net import DIMEControlNet
from diffrl.modules.fpo_actor import FPOActor
from diffrl.modules.gaussian_actor import GaussianActor
from diffrl.modules.generative_policy import ExportableActor, GenerativePolicy
from diffrl.modules.genpo_actor import GenPOActor
from diffrl.modules.genpo_distribution import GenPODistribution
from diffrl.modules.genpo_flow import GenPOFlow
from diffrl.modules.hl_gauss_q_value import HLGaussQValue
from diffrl.modules.noise_schedule import NoiseSchedule
from diffrl.modules.pathwise_policy import PathwisePolicy, PathwiseSample
from diffrl.modules.squashed_gaussian_actor import SquashedGaussianActor
from diffrl.modules.trudi_actor import TruDiActor
from diffrl.modules.trudi_distribution import TruDiDistribution
from diffrl.modules.value_net import make_value_network
from diffrl.modules.velocity_net import VelocityNet

__all__ = [
    "CFMFlow",
    "DIMEActor",
    "DIMEControlNet",
    "DenoisingChain",
    "ExportableActor",
    "FPOActor",
    "GaussianActor",
    "GenPOActor",
    "GenPODistribution",
    "GenPOFlow",
    "GenerativePolicy",
    "HLGaussQValue",
    "NoiseSchedule",
    "PathwisePolicy",
    "PathwiseSample",
    "SquashedGaussianActor",
    "TruDiActor",
    "TruDiDistribution",
    "VelocityNet",
    "make_value_network",
]
