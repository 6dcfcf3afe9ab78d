"""Facts about this machine that every layer may ask: where hvd keeps what it makes once
(`cache_dir`), the CPU's name and features, the threads to run on, and one way to key
anything made for a model on a machine (`fingerprint`)."""
from __future__ import annotations

import hashlib
import os
import platform
from pathlib import Path
from typing import Optional

from hvd.errors import InputError


def cache_dir() -> Path:
    return Path(os.environ.get("HVD_CACHE", Path.home() / ".cache" / "hvd"))


ISA_FLAGS = ("avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16")  # named in bench JSON


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
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def resolve_threads(threads: Optional[int]) -> int:
    """CPU threads: `threads` when given, else $OMP_NUM_THREADS when set, else every core."""
    if threads is None:
        env = os.environ.get("OMP_NUM_THREADS", "").strip()
        threads = int(env) if env.isdigit() and int(env) > 0 else (os.cpu_count() or 1)
    if not isinstance(threads, int) or threads <= 0:
        raise InputError(f"threads must be a positive integer, got {threads}")
    return threads


def fingerprint(*parts: object, length: int = 16) -> str:
    """A short stable key (hex) of `parts`, joined by "|": what a cached file made for one model
    on one machine is named by."""
    return hashlib.sha1("|".join(str(p) for p in parts).encode()).hexdigest()[:length]
