"""LayerSkip-style self-speculation: the target drafts for itself with some layers skipped.

Training-free. Each step drafts a greedy chain of `k` tokens through the target's kept
layers (the skipped layers are simply not run), attending over the target's own KV cache of
the committed tokens; `hvd/targets/skip_draft.py` does the model work, this file only the policy.

One-token decoding is memory-bound on a CPU, so a draft token costs about the kept share of
the layers plus the LM head: nearly what a verification forward costs. Skipping more layers
cuts acceptance faster than it cuts that cost, so on a small model no setting beats `ar`
(docs/BENCHMARKS.md, "bfloat16 on the lean target"); the default is the one that loses least,
k = 1 with `default_skip`'s layers. On a larger, compute-bound target the same code lets more
layers go.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from hvd.drafters.base import Capabilities, DecodeContext
from hvd.targets.protocol import SkipsLayers
from hvd.targets.skip_draft import SkipDraft
from hvd.types import Draft


@dataclass(frozen=True)
class LayerSkipConfig:
    k: int = 1  # draft depth per step
    skip: Optional[tuple[int, ...]] = None  # decoder layers to skip; None = default_skip(n_layers)


def default_skip(n_layers: int) -> tuple[int, ...]:
    """n/7 layers (4 of 30: 12, 15, 18, 21), every third one around the middle. Skipping more,
    contiguous or alternating, cuts the first token's acceptance far faster than the draft's
    cost, and skipping late layers leaves drafts that are almost never accepted."""
    count, mid = n_layers // 7, n_layers // 2
    return tuple(l for l in (mid - 3 + 3 * i for i in range(count)) if 0 < l < n_layers - 1)


class LayerSkipDrafter:
    name = "layerskip"
    capabilities = Capabilities(drafts_on_target=True)

    def __init__(self, model: SkipDraft, config: LayerSkipConfig = LayerSkipConfig(), name: str = "layerskip") -> None:
        self.model, self.config, self.name = model, config, name

    def for_request(self) -> "LayerSkipDrafter":
        return self  # no per-request state

    def begin(self, prompt: Sequence[int]) -> None:
        pass

    def propose(self, ctx: DecodeContext) -> Draft:
        k = min(self.config.k, ctx.max_draft)
        return Draft.chain(self.model.draft(ctx.tokens, k)) if k > 0 else Draft.empty()

    def observe(self, committed: Sequence[int]) -> None:
        pass

    def end(self, output: Sequence[int]) -> None:
        pass


def for_target(target, config: LayerSkipConfig = LayerSkipConfig(), name: str = "layerskip") -> LayerSkipDrafter:
    """A layerskip drafter over `target` (one that `SkipsLayers`)."""
    if not isinstance(target, SkipsLayers):
        raise TypeError(f"layerskip needs a target that can draft for itself; {type(target).__name__} cannot")
    skip = config.skip if config.skip is not None else default_skip(target.num_layers)
    return LayerSkipDrafter(SkipDraft(target, skip), config, name)
