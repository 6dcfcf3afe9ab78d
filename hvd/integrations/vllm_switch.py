"""Per-request control of hvd's speculation inside vLLM 0.34:
`extra_args={"speculative": {"max_draft_tokens": N}}` (the OpenAI server's `vllm_xargs`) caps
that request's drafts at N tokens, 0 turning speculation off for it.

vLLM's speculators see no request parameters; its logits processors do, when a request
enters the batch. `SpeculationSwitch` is such a processor that changes no logits: it checks
the argument at admission (a bad value fails the request with vLLM's 400) and records each
slot's cap in this worker process, where `HvdSpeculator` reads it. Load it with
`--logits-processors hvd.integrations.vllm_switch:SpeculationSwitch`.
"""
from __future__ import annotations

from typing import Any, Optional

from vllm.v1.worker.gpu.sample.logits_processor.interface import LogitsProcessor

KEY = "speculative"
_limits: dict[int, int] = {}  # request-state slot -> most draft tokens (absent: no cap)


def draft_limit(slot: int, default: int) -> int:
    """The cap on drafts for the request in `slot` (`default` where none was asked)."""
    return _limits.get(slot, default)


def requested_limit(extra_args: Optional[dict[str, Any]]) -> Optional[int]:
    """The cap a request asks for (None: none); ValueError for a malformed one."""
    spec = (extra_args or {}).get(KEY)
    if spec is None:
        return None
    if not isinstance(spec, dict) or set(spec) - {"max_draft_tokens"}:
        raise ValueError(f'extra_args "{KEY}" must be an object with one key, "max_draft_tokens"')
    limit = spec.get("max_draft_tokens")
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ValueError(f'"max_draft_tokens" must be a non-negative integer, not {limit!r}')
    return limit


class SpeculationSwitch(LogitsProcessor):
    """Records each request's `max_draft_tokens` (see the module docstring); logits untouched."""

    def __init__(self, vllm_config: Any = None, req_states: Any = None) -> None:
        _limits.clear()

    @classmethod
    def validate_params(cls, sampling_params: Any) -> None:
        requested_limit(getattr(sampling_params, "extra_args", None))

    def add_request(self, req_idx: int, sampling_params: Any) -> bool:
        limit = requested_limit(getattr(sampling_params, "extra_args", None))
        if limit is None:
            _limits.pop(req_idx, None)  # the slot's previous occupant's cap
        else:
            _limits[req_idx] = limit
        return False  # no logits to change for this request

    def apply(self, logits: Any, ctx: Any) -> Any:
        return logits
