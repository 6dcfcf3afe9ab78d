"""Choosing the target a model runs through: the `auto` dtype order and the exactness guard.

`int8` is the exact target (hvd/targets/exact.py), `bfloat16` the lean Llama target
(hvd/targets/lean.py), `float32` the model through transformers (hvd/targets/hf.py). Each but
float32 is checked on this machine once to be batch-invariant (`check.check_exact`; the
verdict is cached per kernels, torch, threads, model shape and CPU), and "auto" takes the first
of int8, bfloat16 (CPUs with bf16 matrix units) and float32 that passes.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import torch

from hvd.errors import ModelError
from hvd.machine import cache_dir, cpu_has_bf16_units, cpu_name, fingerprint
from hvd.targets import loader
from hvd.targets.protocol import Target, TargetConfig

DTYPES = ("auto", "int8", "bfloat16", "float32")


@dataclass(frozen=True)
class Selected:
    """The target chosen, the model's tokenizer, and why faster dtypes were passed over."""

    target: Target
    tokenizer: object
    notes: tuple[str, ...]


def select(path, dtype: str, device: str, threads: int, config: TargetConfig) -> Selected:
    """The target for the model at `path` (resolved: `loader.resolve`) in `dtype` ("auto": the
    first that passes here; a note says why each faster one was passed over)."""
    if dtype not in DTYPES:
        raise ModelError(f"unknown dtype {dtype!r}; choose from: {', '.join(DTYPES)}")
    lm, tok = loader.load(str(path), device)
    tried = [dtype] if dtype != "auto" else ["int8", "bfloat16", "float32"]
    if dtype == "auto" and (device != "cpu" or not cpu_has_bf16_units()):
        tried.remove("bfloat16")
    notes: list[str] = []
    for i, name in enumerate(tried):
        try:
            if name == "int8":
                target = exact_target(lm, config, threads)
            elif name == "bfloat16":
                target = lean_target(lm.to(torch.bfloat16), config)
            else:
                from hvd.targets.hf import HFTarget

                target = HFTarget(lm, config)
            return Selected(target, tok, tuple(notes))
        except ModelError as e:
            if i == len(tried) - 1:
                raise
            notes.append(f"{name} passed over: {str(e).split('; use --dtype')[0]}")
            if name == "bfloat16":
                lm, tok = loader.load(str(path), device)  # afresh: the bf16 cast was lossy
    raise AssertionError("unreachable")


def lean_target(lm, config):
    """The lean bf16 Llama target over `lm` (hvd/targets/lean.py), after checking on this machine that
    its forwards are batch-invariant (cached per machine, torch version, threads and model)."""
    from hvd.targets.lean import LlamaTarget
    from hvd.targets.shape import UnsupportedModel

    if next(lm.parameters()).device.type != "cpu":
        raise ModelError("the lean bfloat16 target runs on CPU only for now; use --dtype float32")
    try:
        target = LlamaTarget(lm, config)
    except (UnsupportedModel, AttributeError) as e:
        raise ModelError(f"the lean bfloat16 target cannot run this model ({e}); use --dtype float32") from e
    _guard(target, "bfloat16", prefill=False)
    return target


def exact_target(lm, config, threads: int):
    """The exact int8 Llama target over `lm` (hvd/targets/exact.py): batch-invariant by
    construction, and checked on this machine once anyway (cached like the bf16 check)."""
    from hvd.targets.shape import UnsupportedModel
    from hvd.targets.exact import ExactLlamaTarget
    from hvd.targets.native import NativeUnavailable

    if next(lm.parameters()).device.type != "cpu":
        raise ModelError("the int8 target runs on CPU only; use --dtype float32")
    try:
        target = ExactLlamaTarget(lm, config, threads=threads)
    except (UnsupportedModel, AttributeError) as e:
        raise ModelError(f"the int8 target cannot run this model ({e}); use --dtype float32") from e
    except NativeUnavailable as e:
        raise ModelError(f"the int8 target is unavailable here ({e}); use --dtype float32") from e
    _guard(target, "int8", prefill=True, build=target.build_id)
    return target


def _guard(target, dtype: str, prefill: bool, build: str = "") -> None:
    """Raise ModelError unless `check_exact` passes for this target on this machine (the
    verdict is cached in $HVD_CACHE/batch_invariance.json, per `build` of its kernels too)."""
    from hvd.targets import check

    key = fingerprint(dtype, type(target).__name__, build, torch.__version__, torch.get_num_threads(), target.shape,
                      cpu_name())
    path = cache_dir() / "batch_invariance.json"
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        known = {}
    if key not in known:
        known[key] = check.check_exact(target, prefill=prefill)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(known, indent=1))
    if known[key] is not None:
        raise ModelError(f"{dtype} decoding would not be exact on this machine ({known[key]}); use --dtype float32")
