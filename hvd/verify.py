"""Verification: which draft tokens the target accepts, and the bonus token after them.

Greedy: walk down the tree, at each node following the child equal to the target's argmax;
the bonus is the argmax after the last accepted node. Output equals plain greedy decoding.

Sampling (lossless speculative sampling): at a node with target distribution p, try its
children in order. A child x drafted with distribution q is accepted with probability
min(1, p(x) / q(x)) (q = one-hot for deterministic drafters, so min(1, p(x))); on rejection
p becomes the residual norm(max(p - q, 0)) and the next sibling is tried (recursive
rejection). If no child is accepted, the bonus is sampled from the final residual, so every
committed token is distributed exactly as under plain sampling from p.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from hvd.types import Draft


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 = off

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


def target_probs(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """(vocab,) logits -> (vocab,) the distribution plain sampling draws from."""
    z = logits.float() / params.temperature
    if params.top_k > 0 and params.top_k < z.numel():
        kth = torch.topk(z, params.top_k).values[-1]
        z = z.masked_fill(z < kth, float("-inf"))
    p = torch.softmax(z, dim=-1)
    if params.top_p < 1.0:
        sorted_p, order = torch.sort(p, descending=True)
        before = torch.cumsum(sorted_p, dim=-1) - sorted_p  # mass of strictly more likely tokens
        drop = before >= params.top_p
        p = p.scatter(0, order, sorted_p.masked_fill(drop, 0.0))
        p = p / p.sum()
    return p


def sample_token(p: torch.Tensor, gen: torch.Generator) -> int:
    return int(torch.multinomial(p, 1, generator=gen).item())


def _children(draft: Draft) -> list[list[int]]:
    kids: list[list[int]] = [[] for _ in range(len(draft) + 1)]  # kids[parent + 1]
    for i, p in enumerate(draft.parents):
        kids[p + 1].append(i)
    return kids


def verify_greedy(logits: torch.Tensor, draft: Draft) -> tuple[list[int], int]:
    """logits (1+n, vocab): row 0 after the root, row i+1 after draft node i.

    Returns (accepted path as draft node indices, bonus token)."""
    best = logits.argmax(dim=-1).tolist()  # (1+n,)
    kids = _children(draft)
    path: list[int] = []
    node = -1
    while True:
        want = best[node + 1]
        nxt = next((c for c in kids[node + 1] if draft.tokens[c] == want), None)
        if nxt is None:
            return path, want
        path.append(nxt)
        node = nxt


def verify_sampling(
    logits: torch.Tensor, draft: Draft, params: SamplingParams, gen: torch.Generator
) -> tuple[list[int], int]:
    """Lossless recursive rejection sampling over the draft tree; same return as greedy."""
    kids = _children(draft)
    path: list[int] = []
    node = -1
    while True:
        p = target_probs(logits[node + 1], params)
        accepted: Optional[int] = None
        for c in kids[node + 1]:
            x = draft.tokens[c]
            q = None if draft.probs is None else draft.probs[c].float()
            ratio = p[x] if q is None else p[x] / q[x].clamp_min(1e-20)
            if torch.rand((), generator=gen) < ratio:
                accepted = c
                break
            residual = p.clone()
            if q is None:
                residual[x] = 0.0
            else:
                residual = (p - q).clamp_min(0.0)
            total = residual.sum()
            if total <= 0:  # p had all its mass where the draft put it: rejection was impossible
                accepted = c
                break
            p = residual / total
        if accepted is None:
            return path, sample_token(p, gen)
        path.append(accepted)
        node = accepted
