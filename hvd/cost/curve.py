"""A verify-cost curve: what one verification forward over n draft nodes costs after a context
of a given length, and the cut of a draft that the curve makes best.

The cost-aware rules compare drafts in expected tokens per second, so they need what a verify
over n draft nodes costs: on a CPU it grows with n from the first token, on a GPU it is flat
for small n, and on a CPU each node costs more the longer the context (a row's attention reads
it all). A curve holds medians at a few sizes after `past` tokens and, per size, the seconds
one more context token adds; between sizes it is linear. `hvd/targets/verify_cost.py`
measures curves on a target and caches them; `hvd/cost/calibrator.py` corrects one with
what the steps measure.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Optional, Sequence

import numpy as np
from numba import njit

from hvd.types import CurveInfo

SIZES = (0, 1, 2, 4, 8, 16, 24, 31, 32, 48, 64)  # 31: the most one 32-row pass of the lean target takes
CONTEXTS = (256, 2048)  # tokens before the draft where the curve is measured (the second as far as the model allows)
FLOOR = 0.25  # a verify never costs less than this share of its curve's seconds, however short the context
# How far a measured curve may stray from what a forward can cost before it is taken for noise
# (`implausible`); differences below ABSOLUTE_SLACK seconds are never judged.
RELATIVE_SLACK = 0.15
ABSOLUTE_SLACK = 0.5e-3


@dataclass(frozen=True)
class VerifyCost:
    sizes: tuple[int, ...]  # draft nodes (0 = the root alone: plain decoding)
    seconds: tuple[float, ...]  # median seconds of one verify + commit at that size, after `past` tokens
    past: int = CONTEXTS[0]
    per_token: tuple[float, ...] = ()  # (sizes,) seconds added per context token beyond `past` (empty: none)
    info: Optional[CurveInfo] = field(default=None, compare=False)  # provenance (None: made in code)

    def __call__(self, n: float, context: Optional[int] = None) -> float:
        """Seconds to verify `n` nodes after `context` tokens (None: after `past`): `many` for
        one size, in plain floats (the policy prices a few sizes a step, where numpy's per-call
        cost would be most of it)."""
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
        """The curve `to_dict` wrote, as saved (not smoothed: `monotone` is the caller's)."""
        return VerifyCost(tuple(d["sizes"]), tuple(d["seconds"]), int(d.get("past", CONTEXTS[0])),
                          tuple(d.get("per_token", ())))

    def with_info(self, info: Optional[CurveInfo]) -> "VerifyCost":
        return replace(self, info=info)


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
    caches, where each of numpy's half-dozen calls would pay for cold code, more than this whole
    loop costs."""
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
    return VerifyCost(cost.sizes, _pooled(cost.seconds), cost.past, slopes, cost.info)


def _far(a: float, b: float) -> bool:
    """a exceeds b by more than the slack (relative and absolute)."""
    return a > b * (1 + RELATIVE_SLACK) and a - b > ABSOLUTE_SLACK


def implausible(cost: VerifyCost, far: Optional[int] = None) -> list[str]:
    """What a curve, as measured (before `monotone`), says that no forward can cost, beyond the
    slack: a size cheaper than a smaller one; a row of a bigger verify dearer than a row of a
    smaller one; a plain step at the `far` context (the curve's farthest measured one) costing
    more than the context's growth can explain (attention is at most linear in the context,
    and the weights cost the same at any length). Empty: plausible."""
    out = []
    sizes, seconds = cost.sizes, cost.seconds
    for i in range(1, len(sizes)):
        top = max(seconds[:i])
        if _far(top, seconds[i]):
            out.append(f"{sizes[i]} nodes cost {seconds[i] * 1e3:.2f} ms, less than {top * 1e3:.2f} ms for fewer")
        bound = seconds[0] * (sizes[i] + 1) / (sizes[0] + 1)
        if _far(seconds[i], bound):
            out.append(f"{sizes[i]} nodes cost {seconds[i] * 1e3:.2f} ms, more than {sizes[i] + 1} plain steps "
                       f"({bound * 1e3:.2f} ms)")
    if cost.per_token and far is not None and far > cost.past > 0:
        plain, at_far = seconds[0], cost(0, far)
        if _far(at_far, plain * far / cost.past):
            out.append(f"a plain step costs {at_far * 1e3:.2f} ms after {far} tokens against {plain * 1e3:.2f} ms "
                       f"after {cost.past}: more than the context's growth explains")
    return out
