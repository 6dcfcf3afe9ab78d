"""Per-step choice between the cache draft and the model drafter (HVD's decision rules).

Rules (`PolicyConfig.rule`):
  threshold  the paper's: verify the cache draft when its predicted accepted length exceeds
             `threshold` (6 in the paper), else draft with the model.
  cost       ours: pick the arm with the highest expected tokens per second,
             (expected accepted + 1) / (draft seconds + verify seconds at that draft size),
             with the verify-cost curve measured on this machine. Arms: the cache draft cut to
             its best depth, the model draft, both merged into one tree (`allow_both`; off on the
             exact int8 target, where it does not pay), or none (a plain decoding step: where
             drafting cannot pay, as for most steps of a small model on a CPU). Online
             (hvd/hybrid/calibration.py) the model arm drafts before the decision, its draft
             priced and cut by its own learnt curve; as trained, its estimates are running
             means of its own steps and it is tried at least every `explore_every` decisions.
  rule       the baseline the paper compares against: a fixed threshold on the suffix score.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from hvd.cost.curve import VerifyCost, best_cut

CACHE, MODEL, BOTH, NONE = "cache", "model", "both", "none"
RULES = ("threshold", "cost", "rule")


@dataclass(frozen=True)
class PolicyConfig:
    rule: str = "cost"
    threshold: float = 6.0  # predicted accepted length (rule "threshold")
    score_threshold: float = 8.0  # suffix score (rule "rule"; best F1 for accepted >= 6 on the train traces)
    ema: float = 0.1  # weight of the newest step in the model arm's running estimates
    # the union of both drafts as one more option. None: decided for the target when the hybrid
    # is built (`hybrid.build`): off on the exact int8 target, where hvd is faster without it on
    # every suite (a branch's path keys take the slower per-row attention, while the union is
    # priced by the chain curve; measured: docs/BENCHMARKS.md, "The union arm"); on elsewhere,
    # where turning it off does not pay
    allow_both: Optional[bool] = None
    allow_none: bool = True
    cut: bool = True  # cost rule: cut the cache draft to the depth with the best expected rate
    explore_every: int = 32  # cost rule, as trained: try the model arm when it has not drafted for this many steps
    online: bool = True  # cost rule: calibrate online and fall back to the best arm (hvd/hybrid/calibration.py)

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise ValueError(f"unknown hybrid rule {self.rule!r}; choose from: {', '.join(RULES)}")


@dataclass
class ArmEstimate:
    """Running estimates of the model arm, updated after each step it drafted."""

    accepted: float = 1.0  # expected accepted draft tokens
    draft_seconds: float = 0.0
    draft_len: float = 8.0  # nodes

    steps: int = 0

    def update(self, accepted: int, draft_seconds: float, draft_len: int, ema: float) -> None:
        """Running means, the first steps weighted as a plain mean over them and the prior."""
        self.steps += 1
        ema = max(ema, 1.0 / (self.steps + 1))
        self.accepted += ema * (accepted - self.accepted)
        self.draft_seconds += ema * (draft_seconds - self.draft_seconds)
        self.draft_len += ema * (draft_len - self.draft_len)


@dataclass(frozen=True)
class Decision:
    arm: str  # CACHE, MODEL, BOTH or NONE
    cache_depth: int = 0  # cut the cache draft to this depth (0: keep it whole)
    model_depth: int = 0  # cut the model draft to this depth (0: keep it whole)


def choose(cfg: PolicyConfig, predicted: float, score: float, survival: np.ndarray, cache_seconds: float,
           model: ArmEstimate, cost: Optional[VerifyCost], since_model: int = 0,
           model_survival: Optional[np.ndarray] = None) -> Decision:
    """The arm to verify this step. `survival`: (cache draft depth,) P(accepted >= k) for
    k = 1.. of the cache draft (`geometric` from the prediction, or the online curve); empty
    when there is no cache draft. `since_model`: decisions since the model arm last drafted.
    `model_survival`: the same for a model draft already made this step (its drafting time
    is then spent whatever the choice, and the draft is cut like the cache draft; empty: the
    model arm has nothing to propose); None: the model arm drafts only if chosen, priced by
    `model`'s running means."""
    cache_len = len(survival)
    if cfg.rule == "threshold":
        return Decision(CACHE if cache_len and predicted > cfg.threshold else MODEL)
    if cfg.rule == "rule":
        return Decision(CACHE if cache_len and score >= cfg.score_threshold else MODEL)
    assert cost is not None, "the cost rule needs a verify-cost curve"
    if model_survival is None and since_model >= cfg.explore_every:
        return Decision(MODEL)
    depth = 0
    if cache_len:
        depth = best_cut(survival, cost, cache_seconds, start=1) if cfg.cut else cache_len
    if model_survival is None:
        m_depth, m_len, m_accepted, model_secs = 0, model.draft_len, model.accepted, cache_seconds + model.draft_seconds
    else:
        m_depth = best_cut(model_survival, cost, cache_seconds, start=1) if cfg.cut and len(model_survival) else len(model_survival)
        m_len, m_accepted, model_secs = m_depth, float(model_survival[:m_depth].sum()), cache_seconds
    rates = {}
    if model_survival is None or m_depth:
        rates[MODEL] = (m_accepted + 1) / (model_secs + cost(m_len))
    if depth:
        cut = float(survival[:depth].sum())  # E[min(accepted, depth)]
        rates[CACHE] = (cut + 1) / (cache_seconds + cost(depth))
        if cfg.allow_both and MODEL in rates:
            rates[BOTH] = (expected_max(cut, m_accepted) + 1) / (model_secs + cost(depth + m_len))
    if cfg.allow_none or not rates:
        rates[NONE] = 1 / (cache_seconds + cost(0))
    arm = max(rates, key=rates.get)
    return Decision(arm, depth if arm in (CACHE, BOTH) else 0, m_depth if arm in (MODEL, BOTH) else 0)


def capped_mean(a: float, k: int) -> float:
    """E[min(A, k)] for a geometric accepted length A with mean a: a (1 - p^k), p = a / (1 + a).
    What a draft cut to depth k is expected to get accepted."""
    a = max(a, 0.0)
    return a * (1 - (a / (1 + a)) ** k)


def geometric(a: float, depth: int) -> np.ndarray:
    """(depth,) P(A >= k), k = 1..depth, for a geometric accepted length A with mean a: p^k,
    p = a / (1 + a). Its sum is `capped_mean(a, depth)`."""
    a = max(a, 0.0)
    return (a / (1 + a)) ** np.arange(1, depth + 1)


def expected_max(a: float, b: float) -> float:
    """E[max(A, B)] for independent geometric accepted lengths with means a and b: what the
    union of two drafts is expected to accept. With P(A >= k) = p^k, p = a / (1 + a):
    E[max] = sum_k P(A >= k) + P(B >= k) - P(A >= k) P(B >= k) = a + b - r / (1 - r), r = p_a p_b."""
    a, b = max(a, 0.0), max(b, 0.0)
    r = a / (1 + a) * b / (1 + b)
    return a + b - r / (1 - r)
