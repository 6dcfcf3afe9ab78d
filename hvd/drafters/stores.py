"""Cross-request knowledge an engine's drafters share, each store bounded.

`responses`: earlier responses in one suffix index (hvd/drafters/suffix.py), read and fed by
`suffix` and by the cache arm of `hvd`, `hvd-threshold` and `rule-hybrid`; at most
`max_response_tokens` response tokens, oldest evicted first. Per-request state (this request's
own prompt + output index, the hybrid's rolling statistics) stays in the drafters.

Read-only, set at load: `assets`, the model's learned parts (hvd/assets.py: its own tri-gram
datastore and predictor where `hvd prepare` made them), and `classes`, its tokens' character
classes (an HVD feature). Without them (a bare Engine in tests) drafters use the shipped parts.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional

import numpy as np

from hvd.drafters.suffix import ResponseStore, SuffixConfig

if TYPE_CHECKING:
    from hvd.assets import ModelAssets


@dataclass
class SharedStores:
    max_response_tokens: int = SuffixConfig().max_global_tokens
    assets: Optional["ModelAssets"] = None
    classes: Optional[np.ndarray] = None  # (vocab, character classes), hvd/hybrid/features.py
    responses: ResponseStore = field(init=False)

    def __post_init__(self) -> None:
        self.responses = ResponseStore(SuffixConfig().min_match, self.max_response_tokens)

    def clear(self) -> None:
        """Forget every earlier response (in place: the drafters keep their references)."""
        self.responses.clear()

    def sizes(self) -> dict[str, int]:
        """Tokens held per store (for metrics)."""
        return {"responses": self.responses.tokens}
