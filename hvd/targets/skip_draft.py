"""Self-drafting: greedy tokens through a subset of the target's own decoder layers, over the
target's own KV cache of the committed tokens (exact context, computed by the full model, so
there is nothing to catch up on). One loop for every target that `SkipsLayers`."""
from __future__ import annotations

from typing import Sequence

import torch

from hvd.targets.protocol import SkipsLayers


class SkipDraft:
    """The target with decoder layers `skip` left out, drafting for itself. The draft's keys and
    values go past the committed length; the target forgets them before `draft` returns."""

    def __init__(self, target: SkipsLayers, skip: Sequence[int]) -> None:
        n = target.num_layers
        if any(not 0 <= l < n for l in skip):
            raise ValueError(f"skipped layers must be in [0, {n}): {tuple(skip)}")
        self.target = target
        self.kept = tuple(l for l in range(n) if l not in set(skip))

    @torch.inference_mode()
    def draft(self, tokens: Sequence[int], k: int) -> list[int]:
        """k greedy tokens after the prompt and the committed `tokens` (the target's cache must
        hold every committed token but the last)."""
        t = self.target
        past = t.cached_len
        if len(tokens) != past + 1:
            raise RuntimeError("self-draft needs the target's cache to hold every committed token but the last")
        out: list[int] = []
        tok = int(tokens[-1])
        try:
            for i in range(k):
                tok = t.skip_step(tok, past, i, self.kept)
                out.append(tok)
        finally:
            t.skip_done(past, self.kept)
        return out
