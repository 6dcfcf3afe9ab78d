"""The drafter interface: the only thing the decode loop knows about a drafter."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Protocol, Sequence, runtime_checkable

import torch

from hvd.cost.calibrator import CostCalibrator
from hvd.types import Draft, OnlineSnapshot


@dataclass(frozen=True)
class Capabilities:
    """What a drafter needs from the target."""

    needs_hidden_states: tuple[int, ...] = ()  # target layers whose hidden states it reads
    drafts_on_target: bool = False  # it runs the target's own sequence to draft (a self-draft): never batched

    @property
    def alone(self) -> bool:
        """Whether a request it drafts for must run with the target to itself (no batch)."""
        return bool(self.needs_hidden_states) or self.drafts_on_target


@dataclass
class DecodeContext:
    """What a drafter may read at a step. `tokens` is prompt + committed output."""

    tokens: list[int]
    prompt_len: int
    max_draft: int  # never propose deeper than this (remaining budget already applied)
    hidden: Optional[dict[int, torch.Tensor]] = None  # layer -> (seq, hidden) for the committed tokens
    # under a grammar: a draft cut to the nodes it allows (the decode loop cuts whatever is
    # proposed; a drafter that weighs its drafts before proposing, the hybrid, cuts them first)
    cut: Optional[Callable[[Draft], Draft]] = None
    # under load (hvd's vLLM core): the most draft tokens the arm of this name may propose, by its
    # measured acceptance in this request; a drafter that combines arms asks it per arm (None:
    # max_draft for every arm)
    arm_budget: Optional[Callable[[str], int]] = None

    @property
    def generated(self) -> int:
        return len(self.tokens) - self.prompt_len


@runtime_checkable
class Drafter(Protocol):
    """Proposes drafts and learns from what the target verified.

    Request lifecycle: ``for_request`` hands out a drafter for one request (fresh per-request
    state; it shares only this drafter's load-time parts: weights, tables, cost curves, and
    the engine's bounded cross-request stores), then on it ``begin`` once with the prompt,
    per step ``propose`` and ``observe`` (with the tokens committed that step, accepted +
    bonus), then ``end`` with the whole output. Two requests never share per-request state.
    A drafter never sees the target's logits.
    """

    name: str
    capabilities: Capabilities

    def for_request(self) -> "Drafter": ...

    def begin(self, prompt: Sequence[int]) -> None: ...

    def propose(self, ctx: DecodeContext) -> Draft: ...

    def observe(self, committed: Sequence[int]) -> None: ...

    def end(self, output: Sequence[int]) -> None: ...


@runtime_checkable
class LearnsOnline(Protocol):
    """A drafter that learns while serving and can say what it has learnt (reported in a
    generation's stats as `calibration`, and by the server's metrics)."""

    def online_state(self) -> Optional[OnlineSnapshot]: ...


@runtime_checkable
class LearnsCost(Protocol):
    """A drafter that sizes its drafts by what verifies cost here: the decode loop tells it what
    each verify of its draft took (never called in a replay, where no target runs)."""

    def verified(self, nodes: int, seconds: float, context: int) -> None: ...


@runtime_checkable
class SharesCost(Protocol):
    """A drafter that sizes its drafts by a verify-cost calibrator and can read one its owner
    feeds instead of its own (a hybrid's model arm: the hybrid knows what was verified)."""

    def share_cost(self, online: CostCalibrator) -> None: ...
