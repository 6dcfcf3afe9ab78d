"""hvd's C kernels, the exact int8 target's and the float32 target's: compiled once per machine
with the system C compiler into ``$HVD_CACHE/native/``, loaded with ctypes, and called on
tensors' memory. One library, one translation unit: kernels.c includes kernels_common.h (shared
helpers), kernels_int8.c and kernels_int8_layer.c (the exact target) and kernels_f32.c (the
float32 target); each file's header states what it holds and its exactness contract.

The library is keyed by a hash of every source file (`SOURCES`), the flags and the compiler's
version, so an edit to any of them or another compiler builds a new one; nothing is compiled at
import, only on first use.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
from pathlib import Path
from typing import Optional

import torch

SOURCE = Path(__file__).with_name("kernels.c")  # the one translation unit: it #includes the rest
# every file the build reads (the build id hashes them all; tests check none is missing)
SOURCES = (SOURCE,) + tuple(SOURCE.with_name(n) for n in ("kernels_common.h", "kernels_int8.c", "kernels_int8_layer.c",
                                                         "kernels_f32.c"))
ISA = frozenset({"avx2", "fma", "f16c"})  # what the kernels are compiled for
FLAGS = ("-O3", "-mavx2", "-mfma", "-mf16c", "-ffp-contract=off", "-fno-fast-math", "-fopenmp", "-fPIC", "-shared")


class NativeUnavailable(RuntimeError):
    """The kernels cannot be built or run here; the message says why in one line."""


def _compiler() -> str:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        raise NativeUnavailable("no C compiler (cc/gcc) found to build the exact kernels")
    return cc


_SIGNATURES = {
    "hvd_set_threads": [ctypes.c_int],
    "hvd_set_vnni": [ctypes.c_int],
    "hvd_quantize": ["p", "i", "i", "p", "p"],
    "hvd_rmsnorm_quant": ["p", "i", "i", "p", "f", "p", "p", "p"],
    "hvd_rmsnorm": ["p", "i", "i", "p", "f", "p"],
    "hvd_act_mul_quant": ["p", "i", "i", "i", "p", "p"],
    "hvd_linear": ["p", "p", "i", "i", "p", "p", "i", "p", "i", "i"],
    "hvd_linear_argmax": ["p", "p", "i", "i", "p", "p", "i", "i", "p"],
    "hvd_linear_f32": ["p", "i", "i", "p", "i", "p"],
    "hvd_rope_store": ["p", "i", "i", "i", "i", "p", "p", "p", "f", "p", "p", "p", "p", "p", "p", "p", "i"],
    "hvd_move_slots": ["p", "p", "i", "i", "i", "i", "p", "p", "i"],
    "hvd_attention": ["p", "i", "i", "i", "i", "p", "p", "i", "p", "p", "p", "p", "i", "f", "p"],
    "hvd_attention_f32": ["p", "i", "i", "i", "i", "p", "p", "l", "p", "p", "p", "f", "p"],
    "hvd_layer_scratch": ["i"] * 6,
    "hvd_layer": ["p", "p", "i", "p", "p", "p", "p", "p", "p", "i", "p", "p", "p", "p"],
    "hvd_layer_batch": ["p", "p", "i", "p", "p", "p", "p", "i", "p", "p", "p", "p", "p", "p", "p", "p"],
}
_RESTYPES = {"hvd_layer_scratch": ctypes.c_size_t, "hvd_set_vnni": ctypes.c_int}
_CTYPES = {"p": ctypes.c_void_p, "i": ctypes.c_int, "l": ctypes.c_long, "f": ctypes.c_float}


def build_id(compiler_version: str, sources: tuple[Path, ...] = SOURCES) -> str:
    """The library's key: a hash of each source's name and bytes, the flags and the compiler's
    version."""
    h = hashlib.sha256()
    for path in sources:
        data = path.read_bytes()
        h.update(f"{path.name}\0{len(data)}\0".encode())
        h.update(data)
    h.update(" ".join(FLAGS).encode() + b"\0" + compiler_version.encode())
    return h.hexdigest()[:16]


@functools.lru_cache(maxsize=1)
def library() -> ctypes.CDLL:
    """The compiled kernels (built on first use)."""
    from hvd.machine import cache_dir, cpu_flags

    if not ISA <= cpu_flags():
        raise NativeUnavailable("the exact kernels need a CPU with AVX2, FMA and F16C")

    cc = _compiler()
    try:
        version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as e:
        raise NativeUnavailable(f"C compiler {cc} does not run: {e}") from e
    out = cache_dir() / "native" / f"hvd_kernels-{build_id(version)}.so"
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + f".tmp{os.getpid()}")
        proc = subprocess.run([cc, *FLAGS, str(SOURCE), "-o", str(tmp), "-lm"], capture_output=True, text=True)
        if proc.returncode != 0:
            errors = [l for l in proc.stderr.splitlines() if "error" in l] or proc.stderr.strip().splitlines()[-1:]
            raise NativeUnavailable(f"building the exact kernels failed: {errors[0] if errors else proc.returncode}")
        tmp.rename(out)
    lib = ctypes.CDLL(str(out))
    for name, sig in _SIGNATURES.items():
        fn = getattr(lib, name)
        fn.argtypes = [_CTYPES[s] if isinstance(s, str) else s for s in sig]
        fn.restype = _RESTYPES.get(name)
    use_integer_path(os.environ.get("HVD_INT8_PATH", "auto"), lib)
    return lib


INT8_PATHS = ("auto", "avx2", "avx512-vnni")


def use_integer_path(name: str, lib: Optional[ctypes.CDLL] = None) -> str:
    """Select the integer linear's instructions ("auto": AVX-512 VNNI where the CPU has it, else
    AVX2; env HVD_INT8_PATH). Both form the same integer sums, so no output bit depends on it;
    only speed does. Returns the path in use."""
    if name not in INT8_PATHS:
        raise NativeUnavailable(f"HVD_INT8_PATH={name!r}: expected one of {', '.join(INT8_PATHS)}")
    on = (lib or library()).hvd_set_vnni(int(name != "avx2"))
    if name == "avx512-vnni" and not on:
        raise NativeUnavailable("HVD_INT8_PATH=avx512-vnni: this CPU has no AVX-512 VNNI")
    return integer_path(lib)


def integer_path(lib: Optional[ctypes.CDLL] = None) -> str:
    """The integer linear's instructions in use: "avx512-vnni" or "avx2"."""
    return "avx512-vnni" if (lib or library()).hvd_set_vnni(-1) else "avx2"


def weight_group(lib: Optional[ctypes.CDLL] = None) -> int:
    """Output rows per interleaved group of an int8 weight for the path in use (kernels_int8.c's
    hvd_linear): 16 for VNNI (4 tiles side by side), 4 for AVX2. Either layout gives the same sums."""
    return 16 if integer_path(lib) == "avx512-vnni" else 4


class LayerSpec(ctypes.Structure):
    """kernels_int8_layer.c's hvd_layer_spec: one decoder layer's sizes, switches and weight addresses."""

    _fields_ = ([(n, ctypes.c_int) for n in ("hid", "H", "KVH", "D", "inter", "act", "window", "group")]
                + [("eps", ctypes.c_float), ("scale", ctypes.c_float)]
                + [(n, ctypes.c_void_p) for n in ("ln_attn", "ln_mlp", "post_attn", "post_mlp", "q_norm", "k_norm",
                                                  "qkv_bias", "wqkv", "wo", "wgu", "wd", "sqkv", "so", "sgu", "sd")])


def ptr(t: torch.Tensor) -> int:
    """Address of a contiguous tensor's first element."""
    return t.data_ptr()
