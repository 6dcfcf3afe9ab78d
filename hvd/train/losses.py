"""Block losses for a block drafter verified left to right.

Per block of K positions the drafter makes P = K−1 predictions; ℓ_k is the cross-entropy of
prediction k (1-based) against its label y_k. Three additive terms, each behind a flag:

  weighting   position-weighted CE: Σ_k w_k ℓ_k / Σ_k w_k with w_k = exp(−(k−1)/γ)
              (off: the plain mean over k, the "uniform" baseline)
  focal       first-error focal: + λ·ℓ_{j*}, j* the first position whose argmax is wrong
              (nothing when the whole block is right)
  chain       + α·(1 − R), R = (1/P) Σ_k Π_{j≤k} p_j(y_j): the expected accepted length of a
              greedy chain divided by P, a differentiable surrogate that is maximised
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F


@dataclass(frozen=True)
class LossConfig:
    weighting: bool = True
    gamma: float = 10.0
    focal: bool = True
    focal_lambda: float = 0.3
    chain: bool = True
    chain_alpha: float = 40.0

    @staticmethod
    def uniform() -> "LossConfig":
        return LossConfig(weighting=False, focal=False, chain=False)


def position_weights(p: int, gamma: float) -> torch.Tensor:
    """w_k = exp(−(k−1)/γ) for k = 1..p: (p,)."""
    return torch.exp(-torch.arange(p, dtype=torch.float32) / gamma)


def first_wrong(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """One-hot (B, P) of the first position whose argmax differs from its label (all-zero rows
    for fully correct blocks)."""
    wrong = logits.argmax(-1) != labels  # (B, P)
    before = torch.cumsum(wrong.int(), dim=1) - wrong.int()  # wrong positions before each
    return (wrong & (before == 0)).float()


def chain_reward(logp: torch.Tensor) -> torch.Tensor:
    """R per block (B,) from log p_k(y_k) (B, P): the mean over k of the prefix products."""
    return torch.exp(torch.cumsum(logp, dim=1)).mean(dim=1)


def block_loss(logits: torch.Tensor, labels: torch.Tensor, cfg: LossConfig) -> tuple[torch.Tensor, dict[str, float]]:
    """Scalar loss and its parts for logits (B, P, vocab) and labels (B, P)."""
    b, p, v = logits.shape
    logp_all = F.log_softmax(logits.float(), dim=-1)  # (B, P, vocab)
    logp = logp_all.gather(-1, labels[..., None])[..., 0]  # (B, P) log p_k(y_k)
    ce = -logp  # (B, P) ℓ_k
    w = position_weights(p, cfg.gamma).to(ce.device) if cfg.weighting else torch.ones(p, device=ce.device)
    loss = (ce * w).sum(1).div(w.sum()).mean()
    parts = {"ce": float(loss.detach())}
    if cfg.focal:
        focal = cfg.focal_lambda * (ce * first_wrong(logits.detach(), labels)).sum(1).mean()
        loss = loss + focal
        parts["focal"] = float(focal.detach())
    if cfg.chain:
        r = chain_reward(logp).mean()
        loss = loss + cfg.chain_alpha * (1.0 - r)
        parts["chain_R"] = float(r.detach())
    return loss, parts


def block_tau(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """τ per block (B,): 1 + the number of leading correct argmax predictions."""
    right = (logits.argmax(-1) == labels).int()  # (B, P)
    return 1 + torch.cumprod(right, dim=1).sum(1)
