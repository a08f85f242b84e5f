"""Where the rollout stands, as a checkpoint component: a resumed run continues the same episodes."""

from __future__ import annotations

import logging
from typing import Any

from tensordict import TensorDict
from torchrl.checkpoint import GlobalRNGState
from torchrl.collectors import Collector

from diffrl.torchrl_compat import collector_carried_step

logger = logging.getLogger("diffrl.training")


class RolloutState:
    """The per-process state that network weights and counters do not cover.

    For each rank: the global random generators (policy noise, minibatch shuffling), the
    collector's carried tensordict (the next step's observation and the running episode
    return and length) and, when the env offers one (an ``env.simulator_state`` with
    ``state_dict``/``load_state_dict``, as :func:`diffrl.envs.gym.make_gym_env` gives), the
    simulator's exact state, and the update's ``episode_components`` (state that follows the
    episodes, e.g. the running discounted returns of REPPO's reward scaling). With all of them
    restored, a resumed CPU run reproduces the uninterrupted one step for step. An env without a
    simulator state (Isaac Lab) resumes with fresh episodes, which is logged; the episode
    components then start afresh too.

    The trainer :meth:`capture`\\s every rank's state into :attr:`ranks` before rank 0 writes
    the checkpoint; loading picks this rank's entry.
    """

    def __init__(
        self,
        collector: Collector,
        simulator: Any | None,
        rank: int = 0,
        world_size: int = 1,
        episode_components: dict[str, Any] | None = None,
    ) -> None:
        self.collector = collector
        self.simulator = simulator
        self.episode_components = episode_components or {}
        self.rank, self.world_size = rank, world_size
        self.ranks: list[dict[str, Any]] = []

    def capture(self) -> dict[str, Any]:
        """This process's state (the trainer gathers it from every rank into :attr:`ranks`)."""
        # The collector's own state_dict leaves runtime env state out on purpose.
        return {
            "rng": GlobalRNGState().state_dict(),
            "carrier": collector_carried_step(self.collector).clone().to_dict(),  # the collector reuses it
            "simulator": self.simulator.state_dict() if self.simulator is not None else None,
            "episode_components": {name: component.state_dict() for name, component in self.episode_components.items()},
        }

    def state_dict(self) -> dict[str, Any]:
        return {"ranks": self.ranks}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        ranks = state["ranks"]
        if len(ranks) != self.world_size:
            logger.warning(
                "checkpoint written by %d rank(s), resuming on %d: episodes restart and random streams are fresh",
                len(ranks),
                self.world_size,
            )
            return
        mine = ranks[self.rank]
        if mine["simulator"] is not None and self.simulator is not None:
            self.simulator.load_state_dict(mine["simulator"])
            carrier = collector_carried_step(self.collector)
            carrier.update(TensorDict(mine["carrier"], batch_size=carrier.batch_size, device=carrier.device))
            for name, component in self.episode_components.items():
                component.load_state_dict(mine["episode_components"][name])
        else:
            logger.warning("the env has no restorable simulator state: resumed episodes restart from a reset")
        GlobalRNGState().load_state_dict(mine["rng"])
