"""Online calibration of the HVD policy, and the fallback that bounds its losses.

A predictor trained on one machine's traces, and a verify-cost curve measured under one load,
are only estimates here. Running corrections, learnt from what verification tells every step,
in fixed memory: the curves per process (one `OnlineState` per method, shared by its
requests), the bandit per request:

* `AcceptanceCurve`: how likely each depth of a cache draft is to be accepted, per bin of the
  predictor's output and class of the draft's depth, from every step's cache draft against the committed tokens; the policy
  cuts drafts and prices them with this curve instead of a geometric law. A second curve does
  the same for the model arm's drafts, per bin of the accepted length its drafter expects
  (its own calibrated estimate): the model arm drafts every policy step before the decision
  (a tri-gram chain, cheap next to a verify), so every step teaches this curve too.
* `CostCalibrator` (`hvd/cost/calibrator.py`): realised verify seconds vs the curve's, overall
  and per draft-size bucket, with a per-row bound on sizes it has not yet seen verified; the
  policy reads the curve so corrected.
* `ModeBandit`: the guarantee. Three modes run a step: the policy, the cache arm alone (what
  `suffix` does) and the model arm alone. Each mode's realised tokens per second (committed
  tokens / (draft + verify seconds), decayed sums) is tracked. A request's first `warmup`
  steps run the policy; then each other mode runs `min_steps` steps in turn; from there on a
  step runs the policy unless another mode's rate beats it by more than `margin` (then that
  mode), except that with probability `explore` (seeded) it runs another, so every mode's
  rate stays measured. The method is then never slower than its best single arm by more
  than about `margin` + `explore` x the gap between the best mode and the others, plus the
  decisions' own overhead, in a request longer than the warm-up.
  Per request, because its rates compare modes run at different times: carried across
  requests they would compare one workload's policy with another's cache arm (measured:
  docs/BENCHMARKS.md, "Gemma 3 270M").
"""
from __future__ import annotations

import bisect
import random
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
from numba import njit

from hvd.cost.calibrator import CostCalibrator
from hvd.cost.curve import VerifyCost
from hvd.hybrid.policy import ArmEstimate
from hvd.types import AcceptanceSnapshot, Draft, ModesSnapshot, OnlineSnapshot

POLICY, CACHE_ONLY, MODEL_ONLY = "policy", "cache-only", "model-only"
MODEL_PRIOR = 1.0  # the model arm's prediction for a drafter that gives no estimate of its own
MODES = (POLICY, CACHE_ONLY, MODEL_ONLY)


@dataclass(frozen=True)
class OnlineConfig:
    enabled: bool = True
    prediction_edges: tuple[float, ...] = (0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0)
    # the whole draft's depth: classes 1-2 | 3-8 | 9+ within each prediction bin. At the same
    # prediction a short draft is accepted far less often than a longer one, and one curve for
    # both would verify the short ones where they lose
    depth_edges: tuple[int, ...] = (2, 8)
    prior: float = 4.0  # pseudo-observations at the prior in each bin (ratio 1; the prior hazard)
    # the acceptance curve's prior hazard: the constant one under which a draft of its depth is
    # expected to get exactly the predicted accepted length (what the predictor was trained to
    # predict: the accepted length of that draft, at most its depth); False: 1 / (1 + predicted),
    # a geometric law whose mean, not capped mean, is the prediction — for a confident draft far
    # below it (predicted 25 of 27 tokens: 16 expected), which cuts a process's first long
    # copies to a few tokens
    capped_prior: bool = True
    decay: float = 0.02  # weight lost per update by older steps (a memory of ~50 steps a bin)
    explore: float = 0.02  # share of steps run by a mode other than the best
    mode_decay: float = 0.01  # per step (of any mode): how fast older steps' weight in each mode's rate fades
    warmup: int = 128  # steps a request's policy runs alone before the other modes are measured:
    # at several tokens a step, requests of a few hundred tokens are left to the policy, whose
    # curves beat every arm there; the turns guard long generations
    min_steps: int = 8  # steps each mode runs (in turn, after the warm-up) before any is preferred
    margin: float = 0.15  # another mode replaces the policy only when faster by this fraction
    follow: bool = True  # cache drafts are compared with later steps' commits too (FollowedDrafts)
    seed: int = 0


class AcceptanceCurve:
    """P(a draft's first k tokens are all accepted) per bin of the predictor's raw output,
    learnt from every step: the curve the policy cuts drafts by and prices them with.

    Accepted lengths are far from geometric: the first token is rejected much more often than
    a geometric law with the predicted mean says, and a draft that got past its first few
    tokens is rarely rejected later (docs/ARCHITECTURE.md, `calibration.py`). So per
    bin and per depth segment (1, 2, 3-4, 5-8, ..., 33-64) the hazard, the chance the token at
    that depth is rejected when all before it were accepted, is estimated from decayed counts:
    positions reached and rejections there. The first segment's estimate is pulled by `prior`
    pseudo-positions towards the prior hazard (`prior_hazard`: the constant one under which the
    draft is expected to get the predicted accepted length), each later one by one
    pseudo-position towards the segment before it: depths a cut draft never reached inherit the
    shallower hazard, and a few drafts that did reach them outweigh it.
    A step's draft tells the curve what it could see: every draft token is compared with the
    committed tokens (the target's own), so a draft that was cut, or not verified at all, is
    censored where the commit ends, never counted as rejected there (`FollowedDrafts` moves
    that end on with later steps' commits, counting each position as a commit decides it).
    Reading and counting are compiled loops (`_survival`, `_count`): they run twice a step right
    after a verification has flushed the caches, where the same loops in Python would pay for
    cold interpreter code at every step."""

    SEGMENTS = (1, 2, 3, 5, 9, 17, 33, 65)  # segment s: depths SEGMENTS[s] .. SEGMENTS[s+1] - 1

    def __init__(self, cfg: OnlineConfig) -> None:
        self.edges, self.depth_edges = cfg.prediction_edges, cfg.depth_edges
        self.prior, self.decay, self.capped_prior = cfg.prior, cfg.decay, cfg.capped_prior
        self._bins, self._classes = len(self.edges) + 1, len(self.depth_edges) + 1
        class_rows = self._bins * self._classes if self._classes > 1 else 0  # one class: the pooled rows alone
        rows, segs = self._bins + class_rows, len(self.SEGMENTS) - 1
        # rows: each prediction bin pooled over depth classes, then each bin's classes
        self._reached = np.zeros((rows, segs))  # decayed positions reached (accepted or rejected there)
        self._rejected = np.zeros((rows, segs))  # decayed rejections
        self._counts = [0] * self._bins  # updates seen per prediction bin (not decayed)
        self._segments = np.array(self.SEGMENTS, np.int64)  # (segs + 1,)
        self.depth = self.SEGMENTS[-1] - 1  # deepest position modelled

    @property
    def reached(self) -> np.ndarray:
        return self._reached[: self._bins].copy()  # (bins, segments), pooled over depth classes

    @property
    def rejected(self) -> np.ndarray:
        return self._rejected[: self._bins].copy()  # (bins, segments), pooled over depth classes

    @property
    def counts(self) -> np.ndarray:
        return np.array(self._counts, np.int64)  # (bins,)

    def _rows(self, predicted: float, depth: int) -> tuple[int, int]:
        """(the prediction bin's pooled row, its depth class's row; -1 without classes) of a
        `depth`-deep draft with this raw prediction."""
        b = bisect.bisect_right(self.edges, predicted)
        if self._classes == 1:
            return b, -1
        return b, self._bins + b * self._classes + bisect.bisect_left(self.depth_edges, depth)

    def survival(self, predicted: float, depth: int) -> np.ndarray:
        """(depth,) P(accepted >= k) for k = 1..depth of a `depth`-deep draft (the whole draft,
        before any cut) with this raw prediction. The prediction bin's pooled hazard per
        segment; the draft's depth class pulled towards it by `prior` pseudo-positions, so a
        class with few steps reads as its bin."""
        b, c = self._rows(predicted, depth)
        return _survival(self._reached, self._rejected, b, c, self.prior, float(predicted), int(depth),
                         self.capped_prior, self._segments)

    def update(self, predicted: float, depth: int, matched: int, known: int, start: int = 0,
               first: bool = True) -> None:
        """A `depth`-deep draft whose first `matched` tokens are the target's, of which `known`
        tokens are committed so far (the draft's rejection is seen only within them): positions
        start+1 .. matched counted as accepted, position matched + 1 as rejected when seen.
        `first`: the draft's first update (the bin's older steps fade by `decay` and its step
        count grows); a followed draft's later positions are added as later commits show them
        (`start`: those already counted), so what the curve knows at a step is all that was
        known then."""
        b, c = self._rows(predicted, depth)
        _count(self._reached, self._rejected, b, c, matched, matched < min(depth, known), start,
               1.0 - self.decay if first else 1.0, self._segments)
        if first:
            self._counts[b] += 1

    def learn(self, predicted: float, draft: Draft, continuation: Sequence[int]) -> None:
        """`update` with a draft and the tokens known to follow its root (censored after them)."""
        self.update(predicted, draft.max_depth(), draft.matched(continuation), len(continuation))

    def snapshot(self) -> AcceptanceSnapshot:
        """Per prediction bin: the accepted length a draft of the modelled depth is expected to
        get, and one as deep as each shallower class allows; steps per bin (all classes)."""
        e = self.edges
        mids = [e[0] / 2, *((a + b) / 2 for a, b in zip(e, e[1:])), e[-1] * 1.5]
        return AcceptanceSnapshot(tuple(round(float(self.survival(m, self.depth).sum()), 2) for m in mids),
                                  {int(d): tuple(round(float(self.survival(m, d).sum()), 2) for m in mids)
                                   for d in self.depth_edges},
                                  tuple(int(c) for c in self._counts))


@njit(cache=True)
def _survival(reached, rejected, b, c, prior, predicted, depth, capped, segments):
    """(depth,) P(accepted >= k), k = 1..depth. Per segment s the hazard is the pooled row b's
    (its first segment pulled by `prior` pseudo-positions towards the prior hazard, each later
    one by one towards the segment before), the class row c's pulled towards that (c < 0: no
    classes). Past the last segment its hazard goes on."""
    prev = prior_hazard(max(predicted, 0.0), max(depth, 1)) if capped else 1.0 / (1.0 + max(predicted, 0.0))
    out = np.empty(depth)
    alive, k, hazard = 1.0, 0, prev
    for s in range(segments.shape[0] - 1):
        w = prior if s == 0 else 1.0
        prev = (rejected[b, s] + w * prev) / (reached[b, s] + w)  # the bin's hazard in this segment
        hazard = prev if c < 0 else (rejected[c, s] + prior * prev) / (reached[c, s] + prior)
        for _ in range(segments[s + 1] - segments[s]):
            if k == depth:
                return out
            alive *= 1.0 - hazard
            out[k] = alive
            k += 1
    while k < depth:
        alive *= 1.0 - hazard
        out[k] = alive
        k += 1
    return out


@njit(cache=True)
def _count(reached, rejected, b, c, matched, was_rejected, start, keep, segments):
    """Rows b and c (c < 0: none) of a curve: older counts x `keep`, positions start+1 ..
    matched reached, and position matched + 1 reached and rejected when `was_rejected`."""
    depth = segments[-1] - 1
    done, seen = min(start, depth), min(matched, depth)
    for row in (b, c):
        if row < 0:
            continue
        for s in range(segments.shape[0] - 1):
            lo, n = segments[s], segments[s + 1] - segments[s]
            new = min(max(seen + 1 - lo, 0), n) - min(max(done + 1 - lo, 0), n)
            if keep != 1.0:
                reached[row, s] *= keep
                rejected[row, s] *= keep
            reached[row, s] += new
        if was_rejected and matched < depth:  # position matched + 1 was rejected
            s = 0
            while segments[s + 1] <= matched + 1:
                s += 1
            reached[row, s] += 1
            rejected[row, s] += 1


@njit(cache=True)
def prior_hazard(predicted, depth):
    """The per-token rejection chance h under which a `depth`-deep draft (depth >= 1) is
    expected to get `predicted` (>= 0) tokens accepted: sum over k = 1..depth of (1 - h)^k =
    predicted (within 0.001 .. the geometric 1 / (1 + predicted), which reaches it only for
    endless drafts). The inverse of `policy.capped_mean`, whose p is 1 - h, by bisection."""
    lo, hi = 1e-3, 1.0 / (1.0 + predicted)
    for _ in range(40):  # bisection: the capped mean falls as the hazard grows
        h = 0.5 * (lo + hi)
        keep = 1.0 - h
        if keep * (1.0 - keep ** depth) / h > predicted:
            lo = h
        else:
            hi = h
    return 0.5 * (lo + hi)


class FollowedDrafts:
    """Cache drafts still being compared with what the target commits after their own step, so
    the acceptance curve learns how far each would have gone, not just how far its step could
    show: a draft cut at depth d and accepted whole says nothing past d + 1 at its step (the
    bonus token), and a curve fed only that never learns that long copies go on, so it keeps
    cutting them short. Each position is counted as soon as a commit decides it: a draft's
    step counts what it committed, each later commit the positions it adds, until the draft is
    rejected or runs out. Counting a draft only once it is settled would bias the curve:
    rejections arrive at once, while a long copy's acceptances wait for its end, so during the
    very copies the curve is read for it would have seen their failures and not yet their
    successes."""

    LIMIT = 16  # open drafts at most (the oldest stops being followed when another opens)

    def __init__(self, curve: AcceptanceCurve) -> None:
        self.curve = curve
        self._open: list[tuple[float, Draft, list[int], int]] = []  # (prediction, whole draft, continuation, counted)

    def add(self, predicted: float, draft: Draft, committed: Sequence[int]) -> None:
        """A step's whole cache draft and the tokens its step committed."""
        self._advance(predicted, draft, list(committed), 0, True)

    def extend(self, committed: Sequence[int]) -> None:
        """Tokens a later step committed: every open draft's continuation grows by them."""
        still, self._open = self._open, []
        for predicted, draft, seen, counted in still:
            self._advance(predicted, draft, seen + list(committed), counted, False)

    def close(self) -> None:
        """The request ended: open drafts are censored where their continuation ends."""
        self._open = []

    def _advance(self, predicted: float, draft: Draft, seen: list[int], counted: int, first: bool) -> None:
        matched, depth = draft.matched(seen), draft.max_depth()
        self.curve.update(predicted, depth, matched, len(seen), counted, first)
        if matched < len(seen) or matched >= min(depth, self.curve.depth):  # rejected, or nothing left to learn
            return
        if len(self._open) >= self.LIMIT:
            self._open.pop(0)
        self._open.append((predicted, draft, seen, matched))


class ModeBandit:
    def __init__(self, cfg: OnlineConfig) -> None:
        self.explore, self.decay = cfg.explore, cfg.mode_decay
        self.min_steps, self.margin, self.warmup = cfg.min_steps, cfg.margin, cfg.warmup
        self.rng = random.Random(cfg.seed)
        self.tokens = dict.fromkeys(MODES, 0.0)
        self.seconds = dict.fromkeys(MODES, 0.0)
        self.steps = dict.fromkeys(MODES, 0)

    def rate(self, mode: str) -> float:
        return self.tokens[mode] / self.seconds[mode] if self.seconds[mode] > 0 else float("inf")

    def best(self) -> str:
        """The policy, unless another mode is faster by more than `margin`."""
        other = max(MODES[1:], key=self.rate)
        return other if self.rate(other) > (1 + self.margin) * self.rate(POLICY) else POLICY

    def pick(self) -> str:
        if sum(self.steps.values()) < self.warmup:
            return POLICY
        young = [m for m in MODES if self.steps[m] < self.min_steps]
        if young:  # each mode measured first, in turn
            return min(young, key=self.steps.__getitem__)
        best = self.best()
        if self.rng.random() < self.explore:
            return self.rng.choice([m for m in MODES if m != best])
        return best

    def update(self, mode: str, tokens: int, seconds: float) -> None:
        for m in MODES:  # every mode's past fades with every step, so a rarely run mode's rate is recent too
            self.tokens[m] *= 1 - self.decay
            self.seconds[m] *= 1 - self.decay
        self.tokens[mode] += tokens
        self.seconds[mode] += seconds
        self.steps[mode] += 1

    def snapshot(self) -> ModesSnapshot:
        return ModesSnapshot(self.best(), dict(self.steps),
                             {m: round(self.rate(m), 1) for m in MODES if self.seconds[m] > 0})


class OnlineState:
    """What a hybrid learns online about the machine and the model, shared by the requests of
    one method (each request runs its own `ModeBandit`)."""

    def __init__(self, cfg: OnlineConfig, curve: VerifyCost | None) -> None:
        self.cfg = cfg
        self.acceptance = AcceptanceCurve(cfg)
        # the model arm's, per bin of its drafter's own estimate, from every draft it made
        self.model_acceptance = AcceptanceCurve(cfg)
        self.model_arm = ArmEstimate()  # its draft time (its acceptance: the curve above)
        self.cost = CostCalibrator(curve) if curve is not None else None  # its own prior and bucket edges
        # seconds a step spends outside drafting and verifying (learning from the commit,
        # streaming it out): paid by every step whatever it verifies, so the policy prices it
        self.step_overhead, self._overhead_steps = 0.0, 0

    def note_overhead(self, seconds: float) -> None:
        rate = max(self.cfg.decay, 1.0 / (self._overhead_steps + 1))
        self.step_overhead += rate * (seconds - self.step_overhead)
        self._overhead_steps += 1

    def request_bandit(self) -> ModeBandit:
        """A new request's own bandit (measured afresh: which mode is best depends on the
        request's workload; see the module docstring)."""
        return ModeBandit(self.cfg)

    def snapshot(self, modes: Optional[ModesSnapshot] = None) -> OnlineSnapshot:
        """What the method has learnt, with a request's `modes`."""
        return OnlineSnapshot(self.cost.snapshot() if self.cost is not None else None, self.acceptance.snapshot(),
                              self.model_acceptance.snapshot(), round(self.step_overhead * 1e3, 3), modes)
