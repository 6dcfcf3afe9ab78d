"""Peers measured in the same process on the same token ids, counted like our engine:
Hugging Face `generate` greedy (`hf`) and with prompt lookup (`hf-pld`), and, when the
optional llama-cpp-python is installed, `llamacpp` and `llamacpp-pld` (hvd/bench/llamacpp.py).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

import torch

from hvd.bench import llamacpp
from hvd.bench.run import Run

if TYPE_CHECKING:
    from hvd.engine import Engine

__all__ = ["PEERS", "Run", "PeerFn", "hf_generate", "peer", "unavailable"]

PeerFn = Callable[["Engine", list[int], int], Run]  # (engine, prompt ids, max new tokens) -> Run
PEERS: tuple[str, ...] = ("hf", "hf-pld", *llamacpp.NAMES)


class _FirstTokenClock:
    """A `generate` streamer that notes when the first new token arrives."""

    def __init__(self) -> None:
        self.calls = 0
        self.first: Optional[float] = None

    def put(self, value) -> None:
        self.calls += 1
        if self.calls == 2 and self.first is None:  # call 1 is the prompt itself
            self.first = time.perf_counter()

    def end(self) -> None:
        pass


def hf_generate(model, ids: list[int], max_new_tokens: int, eos: frozenset[int], **extra) -> Run:
    x = torch.tensor([ids], device=model.device)
    clock = _FirstTokenClock()
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(
            x, attention_mask=torch.ones_like(x), max_new_tokens=max_new_tokens, do_sample=False,
            eos_token_id=sorted(eos), pad_token_id=sorted(eos)[0], streamer=clock, **extra,
        )
    wall = time.perf_counter() - t0
    new = out[0, len(ids):].tolist()
    return Run(new, (clock.first or time.perf_counter()) - t0, wall)


_hf_models: dict[Path, object] = {}  # model path -> the transformers model the hf peers run


def _hf_model(engine: "Engine"):
    """The engine's model through transformers in float32, loaded once from where the engine
    found it (the hf peers run transformers' own `generate`, not the engine's target)."""
    from hvd.targets import loader

    if engine.model_path is None:
        raise ValueError("the hf peers need an engine made by Engine.load (they load the model again)")
    if engine.model_path not in _hf_models:
        _hf_models[engine.model_path] = loader.load(str(engine.model_path))[0]
    return _hf_models[engine.model_path]


def unavailable(name: str, gguf: Optional[Path]) -> Optional[str]:
    """Why peer `name` cannot run here (one line), or None when it can."""
    return llamacpp.unavailable(gguf) if name in llamacpp.NAMES else None


def peer(name: str, gguf: Optional[Path] = None) -> PeerFn:
    """The runner for peer `name`; llama.cpp peers load `gguf` on their first call."""
    if name == "hf":
        return lambda engine, ids, n: hf_generate(_hf_model(engine), ids, n, engine.eos_ids)
    if name == "hf-pld":
        return lambda engine, ids, n: hf_generate(_hf_model(engine), ids, n, engine.eos_ids, prompt_lookup_num_tokens=10)
    if name in llamacpp.NAMES:
        if gguf is None:
            raise ValueError(f"peer {name} needs a GGUF model file")

        def run(engine, ids: list[int], n: int) -> Run:
            cfg = llamacpp.LlamaCppConfig(Path(gguf), name == "llamacpp-pld", engine.target.max_context,
                                          torch.get_num_threads())
            return llamacpp.llamacpp_generate(cfg, ids, n, engine.eos_ids)

        return run
    raise ValueError(f"unknown peer {name!r}; choose from: {', '.join(PEERS)}")
