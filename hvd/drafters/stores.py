"""Cross-request knowledge an engine's drafters share, each store bounded.

`responses`: earlier responses in one suffix index (hvd/drafters/suffix.py), read and fed by
`suffix` and by the cache arm of `hvd`, `hvd-threshold` and `rule-hybrid`; at most
`max_response_tokens` response tokens, oldest evicted first. Per-request state (this request's
own prompt + output index, the hybrid's rolling statistics) stays in the drafters.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from hvd.drafters.suffix import ResponseStore, SuffixConfig


@dataclass
class SharedStores:
    max_response_tokens: int = SuffixConfig().max_global_tokens
    responses: ResponseStore = field(init=False)

    def __post_init__(self) -> None:
        self.responses = ResponseStore(SuffixConfig().min_match, self.max_response_tokens)

    def clear(self) -> None:
        """Forget every earlier response (in place: the drafters keep their references)."""
        self.responses.clear()

    def sizes(self) -> dict[str, int]:
        """Tokens held per store (for metrics)."""
        return {"responses": self.responses.tokens}
