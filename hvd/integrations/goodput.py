"""How many draft tokens a row may take, from what drafts have been paying in this batch.

vLLM prices every row it verifies; on a CPU a batch of 8 requests is compute-bound, and a draft
token costs about what a committed token of a plain step costs. The arms' own models (the
payoff predictor, the tri-gram chain's acceptance, the learnt verify cost) decide each draft,
but their estimates come from earlier traffic; under load an over-confident one costs the whole
batch. So the core caps each row's budget by the marginal rule, measured rather than predicted:

- a request's drafts from one arm (the suffix cache, the tri-gram chain) are accepted at two
  measured rates: `first`, that the draft's first token is accepted, and `then`, that each
  later token is accepted after the one before it was (accepted tokens after the first over
  those plus the rejections after the first; both decayed over that arm's last drafts and the
  steps it did not draft, with a weak prior: for `first` a sure acceptance, so an arm refused
  once is tried again as its evidence ages, sooner where a row is cheap; for `then`, `first`),
  so its k-th draft token is accepted with probability first x then^(k-1). Two rates, since a
  copy is refused where it starts or not at all (first 0.6, then 0.95: one geometric rate
  would cap it at a few tokens), and each arm its own, since a copy of the prompt and a
  tri-gram guess of the next words are accepted at very different rates in the same request;
- a draft token pays when that probability beats its price `theta`, the share of a plain step
  of this batch that one row costs (by the fitted step, hvd/cost/batch.py): below it, the token
  slows the batch below what plain decoding of the same requests commits;
- an arm's cap is the largest k with first x then^(k-1) > theta (none while the arm has not
  drafted for the request: the arm decides alone until there is evidence); the hybrid chooses
  among the arms' capped drafts.

Alone, or on a GPU, a row costs little against a step, theta is small and the cap rarely binds;
in a CPU batch of 8 a row is a third of the step or more, and only drafts that have been paying
go on.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Sequence

from hvd.cost.batch import StepLine
from hvd.types import Draft

MEMORY = 0.8  # weight kept by a request's earlier drafts at each new one, or step without one
PRIOR = 0.25  # a rate's prior: 2 x PRIOR tokens at its prior mean


@dataclass
class Rate:
    """A decayed count of accepted and refused tokens."""

    accepted: float = 0.0
    refused: float = 0.0

    def add(self, accepted: float, refused: float) -> None:
        """The last draft's tokens; earlier drafts' weigh MEMORY as much."""
        self.accepted = MEMORY * self.accepted + accepted
        self.refused = MEMORY * self.refused + refused

    def fade(self) -> None:
        """A step that told nothing: the evidence ages."""
        self.add(0.0, 0.0)

    @property
    def seen(self) -> bool:
        """Whether any token was counted."""
        return self.accepted + self.refused > 0

    def value(self, prior: float) -> float:
        """The rate, pulled towards `prior` by `2 x PRIOR` tokens."""
        return (self.accepted + 2 * PRIOR * prior) / (self.accepted + self.refused + 2 * PRIOR)


@dataclass
class ArmRecord:
    """One arm's acceptance in one request: its drafts' first tokens, and the tokens after."""

    first: Rate = field(default_factory=Rate)
    then: Rate = field(default_factory=Rate)

    def add(self, accepted: int, drafted: int) -> None:
        """A draft of `drafted` tokens of which the first `accepted` were accepted."""
        self.first.add(accepted > 0, accepted == 0)
        if accepted and drafted > 1:  # a token after the first was verified
            self.then.add(accepted - 1, accepted < drafted)
        else:
            self.then.fade()

    def fade(self) -> None:
        """A step without this arm's draft: the evidence ages, so an arm whose drafts stopped
        paying is tried again (once its rates are back above the price)."""
        self.first.fade()
        self.then.fade()

    @property
    def rates(self) -> Optional[tuple[float, float]]:
        """(first, then) (None: no draft seen yet). Until later tokens have been verified, `then`
        is taken to be `first`, a geometric acceptance: the cap then lets a draft go on past its
        first token, and what follows is learnt."""
        if not self.first.seen:
            return None
        first = self.first.value(1.0)
        return first, self.then.value(first)


@dataclass
class RowRecord:
    """A request's last draft, the arm that drafted it, and each arm's acceptance."""

    arms: dict[str, ArmRecord] = field(default_factory=dict)
    draft: tuple[int, ...] = ()
    arm: Optional[str] = None

    def rates(self, arm: str) -> Optional[tuple[float, float]]:
        """`arm`'s acceptance rates in this request, (first, then) (None: it has not drafted here)."""
        known = self.arms.get(arm)
        return None if known is None else known.rates

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


def price(line: StepLine, requests: int) -> float:
    """theta: the share of a plain step of `requests` requests that one row costs, by the fitted
    step (0 before it is fitted). A draft token accepted with probability p commits p tokens for
    one more row; a plain step commits one token a request; so the token raises the batch's rate
    above plain decoding's when p > theta."""
    plain = line.plain(requests)
    return 0.0 if plain <= 0 or line.per_row <= 0 else line.per_row * requests / plain


def cap(rates: Optional[tuple[float, float]], theta: float, budget: int) -> int:
    """The most draft tokens that pay: the largest k <= budget with first x then^(k-1) > theta
    (`rates`: (first, then); None: no evidence, the budget)."""
    if rates is None or theta <= 0.0:
        return budget
    first, then = rates
    if first <= theta or theta >= 1.0:
        return 0
    if then >= 1.0:
        return budget
    if then <= 0.0:
        return min(budget, 1)
    return max(0, min(budget, math.ceil(math.log(theta / first) / math.log(then))))
