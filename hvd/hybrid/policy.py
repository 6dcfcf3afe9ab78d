"""Per-step choice between the cache draft and the model drafter (HVD's decision rules).

Rules (`PolicyConfig.rule`):
  threshold  the paper's: verify the cache draft when its predicted accepted length exceeds
             `threshold` (6 in the paper), else draft with the model.
  cost       ours: pick the arm with the highest expected tokens per second,
             (expected accepted + 1) / (draft seconds + verify seconds at that draft size),
             with the verify-cost curve measured on this machine; "both" (the two drafts merged
             into one tree) competes the same way, so it wins where verification is nearly free.
  rule       the baseline the paper compares against: a fixed threshold on the suffix score.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from hvd.hybrid.cost import VerifyCost

CACHE, MODEL, BOTH = "cache", "model", "both"
RULES = ("threshold", "cost", "rule")


@dataclass(frozen=True)
class PolicyConfig:
    rule: str = "cost"
    threshold: float = 6.0  # predicted accepted length (rule "threshold")
    score_threshold: float = 2.0  # suffix score (rule "rule")
    ema: float = 0.1  # weight of the newest step in the model arm's running estimates
    allow_both: bool = True

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise ValueError(f"unknown hybrid rule {self.rule!r}; choose from: {', '.join(RULES)}")


@dataclass
class ArmEstimate:
    """Running estimates of the model arm, updated after each step it drafted."""

    accepted: float = 1.0  # expected accepted draft tokens
    draft_seconds: float = 0.0
    draft_len: float = 8.0  # nodes

    def update(self, accepted: int, draft_seconds: float, draft_len: int, ema: float) -> None:
        self.accepted += ema * (accepted - self.accepted)
        self.draft_seconds += ema * (draft_seconds - self.draft_seconds)
        self.draft_len += ema * (draft_len - self.draft_len)


def choose(cfg: PolicyConfig, predicted: float, score: float, cache_len: int, cache_seconds: float,
           model: ArmEstimate, cost: Optional[VerifyCost]) -> str:
    """The arm to verify this step: CACHE, MODEL or BOTH."""
    if cache_len == 0:
        return MODEL
    if cfg.rule == "threshold":
        return CACHE if predicted > cfg.threshold else MODEL
    if cfg.rule == "rule":
        return CACHE if score >= cfg.score_threshold else MODEL
    assert cost is not None, "the cost rule needs a verify-cost curve"
    rates = {
        CACHE: (predicted + 1) / (cache_seconds + cost(cache_len)),
        MODEL: (model.accepted + 1) / (cache_seconds + model.draft_seconds + cost(model.draft_len)),
    }
    if cfg.allow_both:
        merged = cost(cache_len + model.draft_len)
        rates[BOTH] = (expected_max(predicted, model.accepted) + 1) / (cache_seconds + model.draft_seconds + merged)
    return max(rates, key=rates.get)


def expected_max(a: float, b: float) -> float:
    """E[max(A, B)] for independent geometric accepted lengths with means a and b: what the
    union of two drafts is expected to accept. With P(A >= k) = p^k, p = a / (1 + a):
    E[max] = sum_k P(A >= k) + P(B >= k) - P(A >= k) P(B >= k) = a + b - r / (1 - r), r = p_a p_b."""
    a, b = max(a, 0.0), max(b, 0.0)
    r = a / (1 + a) * b / (1 + b)
    return a + b - r / (1 - r)
