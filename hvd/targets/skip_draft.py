"""Self-drafting for the Llama-family targets: greedy tokens through a subset of the target's
layers, over the target's own KV cache (the draft's keys go past the committed length, where
the next verify overwrites them)."""
from __future__ import annotations

from typing import Sequence

import torch


class SkipDraft:
    """Greedy drafting through the target's kept layers over its own KV cache: the draft
    tokens' keys go to slots past the committed length, which the next verify overwrites."""

    def __init__(self, target, skip: tuple[int, ...]) -> None:
        n = target.shape.layers
        if any(not 0 <= l < n for l in skip):
            raise ValueError(f"skipped layers must be in [0, {n}): {skip}")
        self.target = target
        self.kept = [l for l in range(n) if l not in set(skip)]

    @torch.inference_mode()
    def draft(self, tokens: Sequence[int], k: int) -> list[int]:
        t = self.target
        past = t.cached_len
        if len(tokens) != past + 1:
            raise RuntimeError("self-draft needs the target's cache to hold every committed token but the last")
        out: list[int] = []
        tok = int(tokens[-1])
        for i in range(k):
            slot = past + i
            path = list(range(past, slot + 1))
            h, _ = t._forward([tok], slot, torch.tensor([slot]), [path], layers=self.kept)
            tok = int(t._logits(h).argmax())
            out.append(tok)
        return out
