"""How many draft tokens a row may take, from what drafts have been paying in this batch.

vLLM prices every row it verifies; on a CPU a batch of 8 requests is compute-bound, and a draft
token costs about what a committed token of a plain step costs. The arms' own models (the
payoff predictor, the tri-gram chain's acceptance, the learnt verify cost) decide each draft,
but their estimates come from earlier traffic; under load an over-confident one costs the whole
batch. So the core caps each row's budget by the marginal rule, measured rather than predicted:

- a request's drafts from one arm (the suffix cache, the tri-gram chain) are accepted token by
  token with probability `alpha` (the rate of a geometric acceptance: accepted tokens over
  accepted plus rejected, decayed over that arm's last drafts and the steps it did not draft,
  with a weak prior at even odds), so its k-th draft token is accepted with probability alpha^k;
  each arm has its own rate, since a copy of the prompt and a tri-gram guess of the next words
  are accepted at very different rates in the same request;
- a draft token pays when that probability beats its price `theta`, the share of a plain step
  of this batch that one row costs (by the fitted step line): below it, the token slows the batch
  below what plain decoding of the same requests commits;
- an arm's cap is the largest k with alpha^k > theta (none while the arm has not drafted for the
  request: the arm decides alone until there is evidence); the hybrid chooses among the arms'
  capped drafts.

Alone, or on a GPU, a row costs little against a step, theta is small and the cap rarely binds;
in a CPU batch of 8 a row is a third of the step or more, and only drafts that have been paying
go on.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Sequence

from hvd.types import Draft

MEMORY = 0.8  # weight kept by a request's earlier drafts at each new one, or step without one
PRIOR = 0.25  # pseudo-counts of accepted and of rejected tokens


@dataclass
class ArmRecord:
    """One arm's decayed acceptance counts in one request."""

    accepted: float = 0.0
    rejected: float = 0.0

    def add(self, accepted: int, drafted: int) -> None:
        """A draft of `drafted` tokens of which the first `accepted` were accepted."""
        self.accepted = MEMORY * self.accepted + accepted
        self.rejected = MEMORY * self.rejected + (accepted < drafted)

    def fade(self) -> None:
        """A step without this arm's draft: the evidence ages, so an arm whose drafts stopped
        paying is tried again (one token, once its rate is back near the prior's)."""
        self.accepted *= MEMORY
        self.rejected *= MEMORY

    @property
    def alpha(self) -> Optional[float]:
        """The per-token acceptance rate, with a prior of one token at even odds (None: no draft
        seen yet)."""
        n = self.accepted + self.rejected
        return None if n == 0 else (self.accepted + PRIOR) / (n + 2 * PRIOR)


@dataclass
class RowRecord:
    """A request's last draft, the arm that drafted it, and each arm's acceptance."""

    arms: dict[str, ArmRecord] = field(default_factory=dict)
    draft: tuple[int, ...] = ()
    arm: Optional[str] = None

    def alpha(self, arm: str) -> Optional[float]:
        """`arm`'s acceptance rate in this request (None: it has not drafted here)."""
        known = self.arms.get(arm)
        return None if known is None else known.alpha

    def drafted(self, arm: Optional[str], chain: Sequence[int]) -> None:
        """This step's draft (`arm` None or `chain` empty: none); every other arm's evidence ages."""
        self.draft, self.arm = (tuple(chain), arm) if chain and arm is not None else ((), None)
        for name, known in self.arms.items():
            if name != self.arm:
                known.fade()

    def saw(self, committed: Sequence[int]) -> None:
        """The tokens committed since the last draft: its accepted prefix, then the target's own."""
        if not self.draft:
            return
        a = min(Draft.chain(self.draft).matched(committed), max(len(committed) - 1, 0))  # the last is the bonus
        self.arms.setdefault(self.arm, ArmRecord()).add(a, len(self.draft))
        self.draft, self.arm = (), None


def price(fixed: float, per_row: float, requests: int) -> float:
    """theta: the share of a plain step of `requests` rows that one row costs, by the fitted step
    line (0 before it is fitted). A draft token accepted with probability p commits p tokens for
    one more row; a plain step commits one token a row; so the token raises the batch's rate above
    plain decoding's when p > theta."""
    plain = fixed + per_row * requests
    return 0.0 if plain <= 0 or per_row <= 0 else per_row * requests / plain


def cap(alpha: Optional[float], theta: float, budget: int) -> int:
    """The most draft tokens that pay: the largest k <= budget with alpha^k > theta."""
    if alpha is None or theta <= 0.0 or alpha >= 1.0:
        return budget
    if alpha <= 0.0 or theta >= 1.0:
        return 0
    return max(0, min(budget, math.ceil(math.log(theta) / math.log(alpha)) - 1))
