"""Peers `llamacpp` and `llamacpp-pld`: llama-cpp-python on the same GGUF file, greedy.

llama-cpp-python is an optional extra (``pip install 'hvd[llamacpp]'``, a long CPU build with
``CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON"``), not installed in CI; written against
0.3.36 (docs/BENCHMARKS.md). When ``llama_cpp`` does not import,
`hvd bench` skips both peers with a note (see `unavailable`). Its outputs are not expected
to be token-identical to ours: llama.cpp computes with the quantized GGUF weights, we with
their float32 dequantization.

`llamacpp` is plain autoregressive decoding with ``Llama.generate``; `llamacpp-pld` passes
``LlamaPromptLookupDecoding(num_pred_tokens=10)`` as ``draft_model``, llama-cpp-python's
prompt lookup (it sets logits_all itself when a draft model is given). Both read the
prompt's token ids, decode greedily (temperature 0, top_k 1, no repetition penalty) and stop
at EOS or max_new_tokens. The first new token's arrival ends the TTFT clock, as for the hf
peers. The number of target forwards is not exposed, so τ is left blank.
"""
from __future__ import annotations

import importlib.util
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from hvd.bench.run import Run

NAMES = ("llamacpp", "llamacpp-pld")
PLD_TOKENS = 10  # as hf-pld's prompt_lookup_num_tokens
INSTALL_HINT = "pip install 'hvd[llamacpp]'"


def unavailable(gguf: Optional[Path]) -> Optional[str]:
    """Why the llama.cpp peers cannot run here, or None when they can."""
    if importlib.util.find_spec("llama_cpp") is None:
        return f"llama-cpp-python is not installed ({INSTALL_HINT})"
    if gguf is None:
        return "they need a GGUF model file (--model FILE.gguf, or the default model)"
    return None


@dataclass(frozen=True)
class LlamaCppConfig:
    gguf: Path
    pld: bool = False
    n_ctx: int = 8192
    n_threads: int = 1


_LOADED: dict[LlamaCppConfig, Any] = {}  # one Llama per config, loaded on first use (warm-up)


def _llama(cfg: LlamaCppConfig):
    if cfg not in _LOADED:
        from llama_cpp import Llama
        from llama_cpp.llama_speculative import LlamaPromptLookupDecoding

        draft = LlamaPromptLookupDecoding(num_pred_tokens=PLD_TOKENS) if cfg.pld else None
        # Prompt lookup reads the logits of every drafted position: without logits_all the
        # scores buffer holds one row and a long prompt's batch fails to fit (seen with 0.3.36).
        _LOADED[cfg] = Llama(model_path=str(cfg.gguf), n_ctx=cfg.n_ctx, n_threads=cfg.n_threads,
                             n_threads_batch=cfg.n_threads, draft_model=draft, logits_all=cfg.pld, verbose=False)
    return _LOADED[cfg]


def llamacpp_generate(cfg: LlamaCppConfig, ids: list[int], max_new_tokens: int, eos: frozenset[int]) -> Run:
    """One greedy generation from token ids."""
    llm = _llama(cfg)
    stop = set(eos) | {int(llm.token_eos())}
    llm.reset()  # no KV prefix reuse from an earlier run: every run pays its own prefill
    new: list[int] = []
    first: Optional[float] = None
    t0 = time.perf_counter()
    for token in llm.generate(ids, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0, reset=True):
        if first is None:
            first = time.perf_counter()
        new.append(int(token))
        if int(token) in stop or len(new) >= max_new_tokens:
            break
    wall = time.perf_counter() - t0
    return Run(new, (first or time.perf_counter()) - t0, wall)
