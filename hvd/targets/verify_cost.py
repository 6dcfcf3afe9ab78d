"""Verification cost per draft size, measured on this machine once and cached on disk.

The cost-aware rule compares arms in tokens per second, so it needs what a verification
forward over n draft nodes costs here: on a CPU it grows with n from the first token (a
64-node tree costs ~3.5x one token), on a GPU it is flat for small n. The curve is measured
at two context lengths, medians of a few repeats, and interpolated linearly in both: a row's
attention reads the whole context, so on a CPU each draft node costs more the longer the
context (on SmolLM2 int8 here: 8 nodes cost 3.1x one token after 256 tokens, 3.9x after
3,000), and a policy priced at a short context verifies too much at a long one.
"""
from __future__ import annotations

import bisect
import hashlib
import json
import random
import statistics
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from numba import njit

from hvd.types import Draft

SIZES = (0, 1, 2, 4, 8, 16, 24, 31, 32, 48, 64)  # 31: the most one 32-row pass of the lean target takes
CONTEXTS = (256, 2048)  # tokens before the draft where the curve is measured (the second as far as the model allows)
FLOOR = 0.25  # a verify never costs less than this share of its curve's seconds, however short the context


@dataclass(frozen=True)
class VerifyCost:
    sizes: tuple[int, ...]  # draft nodes (0 = the root alone: plain decoding)
    seconds: tuple[float, ...]  # median seconds of one verify + commit at that size, after `past` tokens
    past: int = CONTEXTS[0]
    per_token: tuple[float, ...] = ()  # (sizes,) seconds added per context token beyond `past` (empty: none)

    def __call__(self, n: float, context: Optional[int] = None) -> float:
        """Seconds to verify `n` nodes after `context` tokens (None: after `past`): `many` for
        one size, in plain floats (the policy prices a few sizes a step; numpy's per-call cost
        was most of it)."""
        s = _interp(n, self.sizes, self.seconds)
        if context is None or not self.per_token:
            return s
        return max(s + (context - self.past) * _interp(n, self.sizes, self.per_token), FLOOR * s)

    @cached_property
    def points(self) -> tuple[np.ndarray, np.ndarray]:
        """(sizes, seconds) as float64 arrays (k,) each, made once per curve."""
        return np.asarray(self.sizes, dtype=np.float64), np.asarray(self.seconds, dtype=np.float64)

    @cached_property
    def slope_points(self) -> np.ndarray:
        """`per_token` as a float64 array (k,), made once per curve (empty: no context slope)."""
        return np.asarray(self.per_token, dtype=np.float64)

    def many(self, n: np.ndarray, context: Optional[int] = None) -> np.ndarray:
        """(k,) seconds to verify each of `n` (k,) node counts after `context` tokens; a
        longer context adds its slope, a shorter one takes it off (never below a quarter)."""
        sizes, seconds = self.points
        s = np.interp(n, sizes, seconds)
        if context is None or not self.per_token:
            return s
        return np.maximum(s + (context - self.past) * np.interp(n, sizes, self.slope_points), FLOOR * s)

    def at(self, context: int) -> "VerifyCost":
        """The curve after `context` tokens, as a curve of the draft size alone (`many` at its
        own sizes, where interpolation is the identity: one compiled loop)."""
        if not self.per_token:
            return self
        sizes, seconds = self.points
        shifted = _shifted(seconds, self.slope_points, float(context - self.past))
        return VerifyCost.of_arrays(self.sizes, sizes, shifted, context)

    @staticmethod
    def of_arrays(sizes: tuple, size_array: np.ndarray, seconds: np.ndarray, past: int) -> "VerifyCost":
        """A curve whose `points` are the float64 arrays (k,) given (made a step's curve without
        converting them back)."""
        cost = VerifyCost(tuple(sizes), tuple(seconds.tolist()), past)
        cost.__dict__["points"] = (size_array, seconds)  # the cached_property's slot (frozen: no setattr)
        return cost

    def to_dict(self) -> dict:
        return {"sizes": list(self.sizes), "seconds": list(self.seconds), "past": self.past,
                "per_token": list(self.per_token)}

    @staticmethod
    def from_dict(d: dict) -> "VerifyCost":
        return monotone(VerifyCost(tuple(d["sizes"]), tuple(d["seconds"]), int(d.get("past", CONTEXTS[0])),
                                   tuple(d.get("per_token", ()))))


def best_cut(gains: Sequence[float], cost: VerifyCost, fixed_seconds: float = 0.0, start: int = 0) -> int:
    """The n in start .. len(gains) with the most expected tokens per second,
    (1 + sum(gains[:n])) / (fixed_seconds + cost(n)), the smallest of equal ones: the cut of a
    draft (`gains`: each depth's chance of acceptance, P(accepted >= k)) or the size of a tree
    (each node's path probability, in adding order). Start 1 when an empty draft is no option."""
    sizes, seconds = cost.points
    return int(_best_cut(np.asarray(gains, dtype=np.float64), float(fixed_seconds), sizes, seconds, start))


@njit(cache=True)
def cut_at(gains, fixed, sizes, seconds, slopes, extra, start):
    """`best_cut` for compiled callers: the curve given as its points (sizes, seconds) and
    per-token slopes (empty: none), read `extra` context tokens past its own as `at` reads it."""
    if slopes.shape[0]:
        seconds = _shifted(seconds, slopes, extra)
    return _best_cut(gains, fixed, sizes, seconds, start)


@njit(cache=True)
def _best_cut(gains, fixed, sizes, seconds, start):
    """best_cut's loop, compiled: it runs every step right after a verification has flushed the
    caches, where numpy's half-dozen calls cost ~20 us each time (~5 us in all this way)."""
    got = 1.0
    for k in range(min(start, gains.shape[0])):
        got += gains[k]
    best, best_rate = start, -1.0
    for k in range(start, gains.shape[0] + 1):
        if k > start:
            got += gains[k - 1]
        rate = got / max(fixed + np.interp(float(k), sizes, seconds), 1e-12)
        if rate > best_rate:
            best, best_rate = k, rate
    return best


@njit(cache=True)
def seconds_later(seconds, slope, extra):
    """One size's seconds `extra` context tokens later (fewer when negative), for compiled
    callers: the arithmetic of `__call__` and `many`."""
    return max(seconds + extra * slope, FLOOR * seconds)


@njit(cache=True)
def _shifted(seconds, slopes, extra):
    """(k,) each size's seconds `extra` context tokens later (`seconds_later`)."""
    out = np.empty_like(seconds)
    for i in range(seconds.shape[0]):
        out[i] = seconds_later(seconds[i], slopes[i], extra)
    return out


def _interp(x: float, xs: Sequence[float], ys: Sequence[float]) -> float:
    """np.interp at one point, the same operations (so the same bits): ys clamped outside xs."""
    if x <= xs[0]:
        return float(ys[0])
    if x >= xs[-1]:
        return float(ys[-1])
    j = bisect.bisect_right(xs, x) - 1
    slope = (ys[j + 1] - ys[j]) / (xs[j + 1] - xs[j])
    return slope * (x - xs[j]) + ys[j]


def _pooled(values: Sequence[float]) -> tuple[float, ...]:
    """The non-decreasing least-squares fit of a sequence (pool adjacent violators)."""
    blocks: list[list[float]] = []  # [sum, count]
    for s in values:
        blocks.append([s, 1.0])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
            total, count = blocks.pop()
            blocks[-1][0] += total
            blocks[-1][1] += count
    out: list[float] = []
    for total, count in blocks:
        out.extend([total / count] * int(count))
    return tuple(out)


def monotone(cost: VerifyCost) -> VerifyCost:
    """The curve made non-decreasing in the draft size, its per-token slopes too (and >= 0):
    a bigger forward, or a longer context, never costs less."""
    slopes = _pooled([max(x, 0.0) for x in cost.per_token]) if cost.per_token else ()
    return VerifyCost(cost.sizes, _pooled(cost.seconds), cost.past, slopes)


def tree_shape(n: int, seed: int = 0) -> tuple[int, ...]:
    """Parents of an n-node draft tree shaped like a searched one: each node hangs under one of
    the four most recent nodes or the root."""
    rng = random.Random(seed)
    return tuple(rng.choice([-1, *range(max(0, i - 4), i)]) for i in range(n))


def _draft(tokens: list[int], tree: bool) -> Draft:
    return Draft(tuple(tokens), tree_shape(len(tokens))) if tree else Draft.chain(tokens)


def _timed(target, sizes: Sequence[int], past: int, repeats: int, tree: bool) -> list[float]:
    """Median seconds of a greedy verification (as the decode loop runs it: `greedy_verifier`)
    over a chain (or tree) of each size after a `past`-token prefill."""
    from hvd.verify import greedy_verifier

    verify = greedy_verifier(target)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, target.vocab_size, (past + max(sizes) + 1,), generator=gen).tolist()
    target.prefill(ids[:past])
    out = []
    for n in sizes:
        times = []
        for _ in range(repeats + 1):  # the first is a warm-up
            t0 = time.perf_counter()
            verify(ids[past], _draft(ids[past + 1 : past + 1 + n], tree))
            target.commit([])  # keeps the root: the context grows by one token per call
            times.append(time.perf_counter() - t0)
        out.append(statistics.median(times[1:]))
    return out


def measure(target, sizes: Sequence[int] = SIZES, contexts: tuple[int, int] = CONTEXTS, repeats: int = 3,
            tree: bool = False) -> VerifyCost:
    """Time `target.verify` over chains (or trees) of each size after prefills of both context
    lengths (the second cut to what the model attends over; equal: no context slope). The
    target's cache is left in an arbitrary state: call before a generation, never during one."""
    room = target.max_context - max(sizes) - len(sizes) * (repeats + 1) - 1  # each call adds one token
    short, long = min(contexts[0], max(room, 1)), min(contexts[1], room)
    near = _timed(target, sizes, short, repeats, tree)
    slopes: tuple[float, ...] = ()
    if long > 2 * short:  # far enough apart to tell a slope from noise
        far = _timed(target, sizes, long, repeats, tree)
        slopes = tuple((b - a) / (long - short) for a, b in zip(near, far))
    return monotone(VerifyCost(tuple(sizes), tuple(near), short, slopes))  # noise must not make more cost less


def _key(target, tree: bool) -> str:
    model = getattr(target, "model", None)
    name = getattr(getattr(model, "config", None), "_name_or_path", "") or type(target).__name__
    device = getattr(target, "device", "cpu")
    dtype = getattr(target, "dtype", "")
    build = target.build_id  # the compiled kernels: new kernels, a new curve
    from hvd.models import cpu_name

    raw = (f"{name}|{target.vocab_size}|{device}|{dtype}|{type(target).__name__}|{build}|{cpu_name()}|"
           f"{torch.get_num_threads()}|{SIZES}|{CONTEXTS}|{'tree' if tree else 'chain'}")
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
        return VerifyCost.from_dict(json.loads(path.read_text()))  # curves saved before smoothing
    except (OSError, ValueError, KeyError, TypeError):
        pass
    cost = measure(target, tree=tree)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(cost.to_dict()) + "\n")
    return cost
