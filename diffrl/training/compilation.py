"""``torch.compile`` where the time goes: the networks' MLP trunks, shared by collection and the update.

Compiling whole losses or actors meets TensorDict plumbing, Python-side checks and data-dependent
control flow (graph breaks, recompiles); the networks are pure tensor functions that every sample,
inversion and backward pass runs through, so compiling them gives the fusion (Inductor turns
:class:`~diffrl.modules.velocity_net.Mish`'s elementwise chain into one vectorized loop) without
touching the rest. GenPO's flow passes are such pure functions too: the N-step sampling pass of a
collection step (:meth:`GenPOFlow.forward`) and the update's stacked inversion + sample
(:meth:`GenPOFlow.inverse_and_forward`). Compiled whole, their 2N velocity calls and the couplings
between them become one graph (forward and backward), where compiling the trunk alone leaves 2N
calls of Python dispatch and autograd bookkeeping per pass. Batch sizes vary (a rollout step, a
minibatch, the stacked inversion + sample), so the trunks and the sampling pass are compiled dynamic in
the batch dimension; the stacked pass is not (its floats must stay graph constants, see
:mod:`diffrl.modules.genpo_flow`), and an update's minibatch sizes never change.

TorchRL's own ``ClipPPOLoss`` (the PPO recipe's, over a Gaussian actor and an MLP critic) is the
exception to "not whole losses": once its value clip is a Python float
(:func:`~diffrl.torchrl_compat.ppo_clip_value_as_float`) its forward has no data-dependent branch, so
it compiles as one graph (``fullgraph=True``: a graph break raises instead of silently splitting).
At small networks that forward is mostly per-operation overhead (tensordict plumbing, a few dozen
small kernels per minibatch), which one fused graph and its one backward remove
(``benchmarks/update_profile.py --policy gaussian``). diffrl's generative losses are not compiled
whole: they record numerical checks in Python.
"""

from __future__ import annotations

from torch import nn
from torchrl.modules import MLP
from torchrl.objectives import ClipPPOLoss

from diffrl.modules.genpo_flow import GenPOFlow
from diffrl.modules.velocity_net import VelocityNet
from diffrl.torchrl_compat import ppo_clip_value_as_float


def compile_networks(module: nn.Module) -> int:
    """Compile, in place, every velocity-net trunk, ``MLP``, GenPO flow map and ``ClipPPOLoss`` inside ``module``.

    Returns how many modules were compiled. A :class:`GenPOFlow` counts once and is compiled as
    whole passes: its ``forward`` (the sampling pass) and the update's stacked inversion + sample
    (:meth:`GenPOFlow.compile_stacked_pass`); its plain ``inverse`` runs eagerly through the compiled
    trunk. A ``ClipPPOLoss`` (exactly TorchRL's class, not a subclass) is compiled whole as one
    graph, its value clip made a Python float first; the networks inside it are compiled on their
    own as well, for collection and GAE.

    Example:
        >>> from diffrl.modules import GenPOActor, GenPOFlow, make_value_network
        >>> actor, critic = GenPOActor(GenPOFlow(2, 3, hidden_sizes=[8])), make_value_network(3, [8])
        >>> compile_networks(actor), compile_networks(critic)  # the trunk and the flow map; the MLP
        (2, 1)
        >>> from torchrl.objectives import ClipPPOLoss
        >>> from diffrl.modules import GaussianActor
        >>> loss = ClipPPOLoss(GaussianActor(2, 3, [8]), make_value_network(3, [8]), clip_value=0.2, functional=False)
        >>> compile_networks(loss)  # the two MLPs and the loss
        3
    """
    flows = [m for m in module.modules() if isinstance(m, GenPOFlow)]
    targets = [m.trunk for m in module.modules() if isinstance(m, VelocityNet)]
    targets += [m for m in module.modules() if isinstance(m, MLP)]
    for target in [*targets, *flows]:
        target.compile(dynamic=True)
    for flow in flows:
        flow.compile_stacked_pass()
    losses = [m for m in module.modules() if type(m) is ClipPPOLoss]
    for loss in losses:
        ppo_clip_value_as_float(loss).compile(fullgraph=True)
    return len(targets) + len(flows) + len(losses)
