"""Online calibration of the HVD policy, and the fallback that bounds its losses.

A predictor trained on one machine's traces, and a verify-cost curve measured under one load,
are only estimates here. Three running corrections, learnt from what verification tells every
step, in fixed memory: the first two per process (one per method, shared by its requests:
`OnlineState`), the third per request (each request's workload picks its own best mode):

* `PredictionCalibrator`: predicted vs realised accepted length of the verified cache drafts,
  per bin of the prediction; the policy reads prediction x (realised / predicted) of its bin,
  pulled towards 1 by a prior, with old steps decayed.
* `CostCalibrator`: realised verify seconds vs the curve's, per draft-size bucket; the policy
  reads the curve x that ratio.
* `ModeBandit`: the guarantee. Three modes run a step: the policy, the cache arm alone (what
  `suffix` does) and the model arm alone. Each mode's realised tokens per second (committed
  tokens / (draft + verify seconds), decayed sums) is tracked. A request's first `warmup`
  steps run the policy (a short request never pays for measuring the others); then each
  other mode runs `min_steps` steps in turn; from there on a step runs the
  policy unless another mode's rate beats it by more than `margin`
  (then that mode), except that with probability `explore` (seeded) it runs another, so every
  mode's rate stays measured. The method is then never slower than its best single arm by
  more than about `margin` + `explore` x the gap between the best mode and the others, plus
  the decisions' overhead (a few microseconds a step).
"""
from __future__ import annotations

import bisect
import random
from dataclasses import dataclass, field

import numpy as np

from hvd.hybrid.cost import VerifyCost

POLICY, CACHE_ONLY, MODEL_ONLY = "policy", "cache-only", "model-only"
MODES = (POLICY, CACHE_ONLY, MODEL_ONLY)


@dataclass(frozen=True)
class OnlineConfig:
    enabled: bool = True
    prediction_edges: tuple[float, ...] = (0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0)
    size_edges: tuple[int, ...] = (1, 4, 8, 16, 32)  # draft nodes: buckets 0 | 1-3 | 4-7 | ...
    prior: float = 4.0  # pseudo-steps at ratio 1 in each bin
    decay: float = 0.02  # weight lost per update by older steps (a memory of ~50 steps a bin)
    explore: float = 0.05  # share of steps run by a mode other than the best
    mode_decay: float = 0.01  # per step (of any mode): how fast older steps' weight in each mode's rate fades
    warmup: int = 16  # steps the policy runs alone before the other modes are measured: a short
    # request (one tool call, ~50 steps) spends most of its steps on the policy, not on taking turns
    min_steps: int = 8  # steps each mode runs (in turn, after the warm-up) before any is preferred
    margin: float = 0.05  # another mode replaces the policy only when faster by this fraction
    seed: int = 0


@dataclass
class _Ratios:
    """Decayed sums of realised and expected values per bin; ratio pulled to 1 by a prior."""

    bins: int
    prior: float
    decay: float
    realised: np.ndarray = field(init=False)
    expected: np.ndarray = field(init=False)
    counts: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.realised, self.expected = np.zeros(self.bins), np.zeros(self.bins)  # (bins,) each
        self.counts = np.zeros(self.bins, np.int64)  # (bins,) updates seen (not decayed)

    def update(self, b: int, realised: float, expected: float) -> None:
        self.realised[b] = (1 - self.decay) * self.realised[b] + realised
        self.expected[b] = (1 - self.decay) * self.expected[b] + expected
        self.counts[b] += 1

    def ratio(self, b: int, scale: float) -> float:
        """(prior x scale + realised) / (prior x scale + expected): 1 with no data."""
        p = self.prior * scale
        return float((p + self.realised[b]) / (p + self.expected[b]))


class PredictionCalibrator:
    def __init__(self, cfg: OnlineConfig) -> None:
        self.edges = cfg.prediction_edges
        self.r = _Ratios(len(cfg.prediction_edges) + 1, cfg.prior, cfg.decay)

    def _bin(self, predicted: float) -> int:
        return bisect.bisect_right(self.edges, predicted)

    def correct(self, predicted: float) -> float:
        b = self._bin(predicted)
        return predicted * self.r.ratio(b, max(predicted, 0.5))

    def update(self, predicted: float, expected: float, realised: int) -> None:
        """`expected`: what the verified (possibly cut) draft was expected to get accepted,
        from the raw prediction `predicted`; `realised`: what it got."""
        self.r.update(self._bin(predicted), float(realised), float(expected))

    def state(self) -> dict:
        return {"ratios": [round(self.r.ratio(b, 1.0), 3) for b in range(self.r.bins)],
                "steps": self.r.counts.tolist()}


class CostCalibrator:
    def __init__(self, curve: VerifyCost, cfg: OnlineConfig) -> None:
        self.curve, self.edges = curve, cfg.size_edges
        self.r = _Ratios(len(cfg.size_edges) + 1, cfg.prior, cfg.decay)

    def __call__(self, n: float) -> float:
        base = self.curve(n)
        return base * self.r.ratio(bisect.bisect_right(self.edges, n), base)

    def update(self, n: int, seconds: float) -> None:
        self.r.update(bisect.bisect_right(self.edges, n), seconds, self.curve(n))

    def state(self) -> dict:
        return {"ratios": [round(self.r.ratio(b, self.curve(self.edges[b - 1] if b else 0)), 3)
                           for b in range(self.r.bins)], "steps": self.r.counts.tolist()}


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

    def state(self) -> dict:
        return {"best": self.best(), "steps": dict(self.steps),
                "tokens_per_second": {m: round(self.rate(m), 1) for m in MODES if self.seconds[m] > 0}}


class OnlineState:
    """What a hybrid learns online about the machine and the model, shared by the requests of
    one method (each request runs its own `ModeBandit`)."""

    def __init__(self, cfg: OnlineConfig, curve: VerifyCost | None) -> None:
        self.cfg = cfg
        self.prediction = PredictionCalibrator(cfg)
        self.cost = CostCalibrator(curve, cfg) if curve is not None else None

    def request_bandit(self) -> ModeBandit:
        """A new request's own bandit (measured afresh: which mode is best depends on the
        request's workload; carried over from earlier requests, it lost up to 20% on code after
        chat, docs/BENCHMARKS.md)."""
        return ModeBandit(self.cfg)

    def state(self) -> dict:
        return {"prediction": self.prediction.state(),
                **({"verify_cost": self.cost.state()} if self.cost is not None else {})}
