"""Policy building blocks: GenPO's flow and actor, TruDi-PPO's denoising chain and actor, the Gaussian
baseline, the value network. Every actor keeps the contract of :mod:`diffrl.modules.generative_policy`."""

from diffrl.modules.denoising_chain import DenoisingChain
from diffrl.modules.gaussian_actor import GaussianActor
from diffrl.modules.generative_policy import ExportableActor, GenerativePolicy
from diffrl.modules.genpo_actor import GenPOActor
from diffrl.modules.genpo_distribution import GenPODistribution
from diffrl.modules.genpo_flow import GenPOFlow
from diffrl.modules.noise_schedule import NoiseSchedule
from diffrl.modules.trudi_actor import TruDiActor
from diffrl.modules.trudi_distribution import TruDiDistribution
from diffrl.modules.value_net import make_value_network
from diffrl.modules.velocity_net import VelocityNet

__all__ = [
    "DenoisingChain",
    "ExportableActor",
    "GaussianActor",
    "GenPOActor",
    "GenPODistribution",
    "GenPOFlow",
    "GenerativePolicy",
    "NoiseSchedule",
    "TruDiActor",
    "TruDiDistribution",
    "VelocityNet",
    "make_value_network",
]
