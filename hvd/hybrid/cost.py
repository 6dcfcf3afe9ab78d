"""Verification cost per draft size, measured on this machine once and cached on disk.

The cost-aware rule compares arms in tokens per second, so it needs what a verification
forward over n draft nodes costs here: on a CPU it grows with n from the first token (a
64-node tree costs ~3.5x one token), on a GPU it is flat for small n. The curve is measured
at a realistic context length, medians of a few repeats, and interpolated linearly.
"""
from __future__ import annotations

import hashlib
import json
import random
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from hvd.types import Draft

SIZES = (0, 1, 2, 4, 8, 16, 24, 31, 32, 48, 64)  # 31: the most one 32-row pass of the lean target takes


@dataclass(frozen=True)
class VerifyCost:
    sizes: tuple[int, ...]  # draft nodes (0 = the root alone: plain decoding)
    seconds: tuple[float, ...]  # median seconds of one verify + commit at that size

    def __call__(self, n: float) -> float:
        return float(np.interp(n, self.sizes, self.seconds))

    def to_dict(self) -> dict:
        return {"sizes": list(self.sizes), "seconds": list(self.seconds)}


def monotone(cost: VerifyCost) -> VerifyCost:
    """The non-decreasing least-squares fit of a cost curve (pool adjacent violators)."""
    blocks: list[list[float]] = []  # [sum, count]
    for s in cost.seconds:
        blocks.append([s, 1.0])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
            total, count = blocks.pop()
            blocks[-1][0] += total
            blocks[-1][1] += count
    seconds: list[float] = []
    for total, count in blocks:
        seconds.extend([total / count] * int(count))
    return VerifyCost(cost.sizes, tuple(seconds))


def tree_shape(n: int, seed: int = 0) -> tuple[int, ...]:
    """Parents of an n-node draft tree shaped like a searched one: each node hangs under one of
    the four most recent nodes or the root."""
    rng = random.Random(seed)
    return tuple(rng.choice([-1, *range(max(0, i - 4), i)]) for i in range(n))


def _draft(tokens: list[int], tree: bool) -> Draft:
    return Draft(tuple(tokens), tree_shape(len(tokens))) if tree else Draft.chain(tokens)


def measure(target, sizes: Sequence[int] = SIZES, past: int = 256, repeats: int = 3, tree: bool = False) -> VerifyCost:
    """Time `target.verify` over chains (or trees) of each size after a `past`-token prefill
    (the target's cache is left in an arbitrary state: call before a generation, never during one)."""
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, target.vocab_size, (past + max(sizes) + 1,), generator=gen).tolist()
    target.prefill(ids[:past])
    out = []
    for n in sizes:
        times = []
        for _ in range(repeats + 1):  # the first is a warm-up
            t0 = time.perf_counter()
            target.verify(ids[past], _draft(ids[past + 1 : past + 1 + n], tree))
            target.commit([])  # keeps the root: the context grows by one token per call
            times.append(time.perf_counter() - t0)
        out.append(statistics.median(times[1:]))
    return monotone(VerifyCost(tuple(sizes), tuple(out)))  # timing noise must not make more nodes cheaper


def _key(target, tree: bool) -> str:
    model = getattr(target, "model", None)
    name = getattr(getattr(model, "config", None), "_name_or_path", "") or type(target).__name__
    device = getattr(target, "device", "cpu")
    dtype = getattr(target, "dtype", "")
    build = target.build_id  # the compiled kernels: new kernels, a new curve
    from hvd.models import cpu_name

    raw = (f"{name}|{target.vocab_size}|{device}|{dtype}|{type(target).__name__}|{build}|{cpu_name()}|"
           f"{torch.get_num_threads()}|{SIZES}|{'tree' if tree else 'chain'}")
    return hashlib.sha1(raw.encode()).hexdigest()[:16]


def path_for(target, cache_dir: Path, tree: bool = False) -> Path:
    """Where `cached` keeps the curve for this target, machine and thread count."""
    return cache_dir / "verify_cost" / f"{_key(target, tree)}.json"


def cached(target, cache_dir: Path, tree: bool = False) -> VerifyCost:
    """The curve for this target, machine and thread count, over chains or over branching
    trees (which may cost more per node: a 4-D mask, a gather at commit): from disk, else
    measured and saved."""
    path = path_for(target, cache_dir, tree)
    try:
        d = json.loads(path.read_text())
        return monotone(VerifyCost(tuple(d["sizes"]), tuple(d["seconds"])))  # curves saved before smoothing
    except (OSError, ValueError, KeyError):
        pass
    cost = measure(target, tree=tree)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(cost.to_dict()) + "\n")
    return cost
