"""Cross-request knowledge an engine's drafters share, each store bounded.

`responses`: earlier responses in one suffix index (hvd/drafters/suffix.py), read and fed by
`suffix` and by the cache arm of `hvd`, `hvd-threshold` and `rule-hybrid`; at most
`max_response_tokens` response tokens, oldest evicted first. Per-request state (this request's
own prompt + output index, the hybrid's rolling statistics) stays in the drafters.

`calibration`: what each online-learning hybrid has learnt about this machine and model
(hvd/hybrid/calibration.py: cost and prediction ratios, each mode's rate; fixed size per
method, keyed by method name), kept across requests and across `fresh()` copies: it holds no
request content, so a benchmark's fresh drafters learn it as a server's requests do.

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
    calibration: dict = field(default_factory=dict)  # method name -> OnlineState
    responses: ResponseStore = field(init=False)

    def __post_init__(self) -> None:
        self.responses = ResponseStore(SuffixConfig().min_match, self.max_response_tokens)

    def fresh(self) -> "SharedStores":
        """Stores with this model's read-only parts (assets, classes) and its calibration, and
        nothing learnt from responses: for a drafter that must not profit from earlier requests'
        content (benchmarks, tests)."""
        return SharedStores(self.max_response_tokens, self.assets, self.classes, self.calibration)

    def own_calibration(self, calibration: Optional[dict] = None) -> "SharedStores":
        """`fresh` stores, but learning into a calibration of their own (method name ->
        OnlineState; a hybrid makes its state there when missing): one setting of an A/B."""
        return SharedStores(self.max_response_tokens, self.assets, self.classes, dict(calibration or {}))

    def clear(self) -> None:
        """Forget every earlier response (in place: the drafters keep their references)."""
        self.responses.clear()

    def sizes(self) -> dict[str, int]:
        """Tokens held per store (for metrics)."""
        return {"responses": self.responses.tokens}
