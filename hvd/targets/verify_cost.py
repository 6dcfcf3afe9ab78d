"""Verify-cost curves measured on this machine, checked at start and cached on disk.

A curve (`hvd/cost/curve.py`) is timed on the target itself: every size at two context lengths,
so that a row's attention over a long context is priced. A user's machine is rarely quiet, so
the timing is made so that noise shows, and a cached curve is a prior, not a fact:

* `measure` times the sizes in interleaved rounds (each round every size once, in a shuffled
  order), drops samples during which the process got markedly less CPU than usual (another
  process had the cores), and takes medians; the near context is timed again after the far one,
  and the two must agree. A curve whose sizes spread widely (many of them, or one wildly),
  whose shape no forward can have (`implausible`) or whose two near passes disagree is
  measured again; one that still fails is used as it is, marked provisional, and not cached.
* `cached` keeps each curve with when and under what load it was made. At a process's first
  use it times a few sizes at one context (`check`, far cheaper than a measurement) and
  measures the curve again when the machine is clearly faster than the curve says, or its
  shape differs (a machine slower than its curve now is busy now: the online calibration
  follows that pace).
  A curve older than `MAX_AGE` is measured again. `HVD_COST_CHECK=0` skips the check (to
  measure what the online correction does alone).

The curve's `info` (`CurveInfo`) says which of these happened; the stats and `/metrics` show it.
"""
from __future__ import annotations

import json
import os
import random
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch

from hvd.cost.curve import CONTEXTS, SIZES, ABSOLUTE_SLACK, VerifyCost, implausible, monotone
from hvd.machine import cpu_name, fingerprint
from hvd.types import CurveInfo, Draft

ROUNDS = 5  # interleaved rounds of every size per context pass
ATTEMPTS = 3  # measurements of a curve before a failing one is used as provisional
MAX_SPREAD = 0.35  # a size's interquartile range over its median, beyond which it is noisy
NOISY_SHARE = 0.25  # a pass fails when more than this share of its sizes is noisy
WILD_SPREAD = 1.0  # or when any one size spreads this much (a burst of other work)
PACE_TOLERANCE = 0.2  # the near context timed before and after the far one must agree this well
STARVED = 0.7  # a sample with less than this share of the pass's usual CPU per wall second is dropped
CHECK_SIZES = (0, 4, 16)  # sizes the start-up check times
CHECK_ROUNDS = 3
CHECK_EXTRA = 256  # the check's context: this many tokens past the curve's own
CHECK_TOLERANCE = 0.5  # a checked size may read up to 1 + this times faster than the curve says
CHECK_SHAPE = 0.6  # and the sizes' measured / curve ratios may spread by up to 1 + this
MAX_AGE = 7 * 86400.0  # seconds a cached curve is used before it is measured again
FORMAT = 2  # the cache file's layout: {"format", "curve", "made_at", "load", "cpu_share"}


def tree_shape(n: int, seed: int = 0) -> tuple[int, ...]:
    """Parents of an n-node draft tree shaped like a searched one: each node hangs under one of
    the four most recent nodes or the root."""
    rng = random.Random(seed)
    return tuple(rng.choice([-1, *range(max(0, i - 4), i)]) for i in range(n))


def _draft(tokens: list[int], tree: bool) -> Draft:
    return Draft(tuple(tokens), tree_shape(len(tokens))) if tree else Draft.chain(tokens)


@dataclass(frozen=True)
class Pass:
    """One context's timing: per size the median seconds of the samples kept and their spread
    (interquartile range over median), and the pass's usual CPU share per thread."""

    past: int
    seconds: tuple[float, ...]
    spread: tuple[float, ...]
    cpu_share: float


def timed_pass(target, sizes: Sequence[int], past: int, rounds: int, tree: bool, seed: int = 0) -> Pass:
    """Time a greedy verification (as the decode loop runs it: `greedy_verifier`) over a chain
    (or tree) of each size after a `past`-token prefill: a warm-up call of each size, then
    `rounds` rounds, each size once a round in a shuffled order, so that a burst of other work
    slows a few samples of every size rather than every sample of one. Samples during which the
    process had less than `STARVED` of its usual CPU per wall second are dropped, and each size
    reads as the lower quartile of the rest: other work only ever adds time."""
    from hvd.verify import greedy_verifier

    verify = greedy_verifier(target)
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, target.vocab_size, (past + max(sizes) + 1,), generator=gen).tolist()
    target.prefill(ids[:past])
    rng = random.Random(seed)
    walls: dict[int, list[float]] = {n: [] for n in sizes}
    shares: dict[int, list[float]] = {n: [] for n in sizes}
    for r in range(rounds + 1):  # round 0 is the warm-up
        order = list(sizes)
        rng.shuffle(order)
        for n in order:
            c0, t0 = time.process_time(), time.perf_counter()
            verify(ids[past], _draft(ids[past + 1 : past + 1 + n], tree))
            target.commit([])  # keeps the root: the context grows by one token per call
            wall = time.perf_counter() - t0
            if r:
                walls[n].append(wall)
                shares[n].append((time.process_time() - c0) / max(wall, 1e-9))
    usual = statistics.median([x for n in sizes for x in shares[n]])
    seconds, spread = [], []
    for n in sizes:
        kept = [w for w, c in zip(walls[n], shares[n]) if c >= STARVED * usual]
        kept = kept if len(kept) >= max(2, len(walls[n]) // 2) else walls[n]  # too few: the pass as it is
        q = statistics.quantiles(kept, n=4) if len(kept) > 1 else [kept[0]] * 3
        seconds.append(min(q[0], statistics.median(kept)))  # the lower quartile: other work only adds time
        spread.append((q[2] - q[0]) / q[1] if q[2] - q[0] > ABSOLUTE_SLACK else 0.0)
    return Pass(past, tuple(seconds), tuple(spread), usual / max(torch.get_num_threads(), 1))


@dataclass(frozen=True)
class Measured:
    """A measured curve (smoothed by `monotone`) and what its checks found (empty: none)."""

    curve: VerifyCost
    problems: tuple[str, ...]
    cpu_share: float


def measure(target, sizes: Sequence[int] = SIZES, contexts: tuple[int, int] = CONTEXTS, rounds: int = ROUNDS,
            tree: bool = False, seed: int = 0) -> Measured:
    """Time `target.verify` over chains (or trees) of each size after prefills of both context
    lengths (the second cut to what the model attends over; equal: no context slope), the near
    one again after the far one, and check the result (see the module docstring). The
    target's cache is left in an arbitrary state: call before a generation, never during one."""
    room = target.max_context - max(sizes) - len(sizes) * (rounds + 1) - 1  # each call adds one token
    short, long = min(contexts[0], max(room, 1)), min(contexts[1], room)
    near = timed_pass(target, sizes, short, rounds, tree, seed)
    problems = _noisy(sizes, near.spread, "")
    seconds, slopes, shares = near.seconds, (), [near.cpu_share]
    if long > 2 * short:  # far enough apart to tell a slope from noise
        far = timed_pass(target, sizes, long, rounds, tree, seed)
        again = timed_pass(target, sizes, short, rounds, tree, seed + 1)
        problems += _noisy(sizes, far.spread, f" after {long} tokens")
        pace = statistics.median(b / a for a, b in zip(near.seconds, again.seconds))
        moved = statistics.median(abs(b - a) for a, b in zip(near.seconds, again.seconds))
        if abs(pace - 1) > PACE_TOLERANCE and moved > ABSOLUTE_SLACK:
            problems.append(f"the machine's pace changed by {pace - 1:+.0%} while the curve was measured")
        seconds = tuple(min(a, b) for a, b in zip(near.seconds, again.seconds))
        slopes = tuple((b - a) / (long - short) for a, b in zip(seconds, far.seconds))
        shares += [far.cpu_share, again.cpu_share]
    raw = VerifyCost(tuple(sizes), tuple(seconds), short, slopes)
    problems += implausible(raw, long if slopes else None)
    return Measured(monotone(raw), tuple(problems), min(shares))  # noise must not make more cost less


def _noisy(sizes: Sequence[int], spread: Sequence[float], where: str) -> list[str]:
    """The spread sizes of one pass, as problems, when they are too many (more than `NOISY_SHARE`
    of the sizes beyond `MAX_SPREAD`) or one is wild (beyond `WILD_SPREAD`); else none. A few
    samples of a quiet virtual machine's small sizes often spread by a third; each size reads
    as its lower quartile, which such spread hardly moves."""
    noisy = [(n, s) for n, s in zip(sizes, spread) if s > MAX_SPREAD]
    if len(noisy) <= NOISY_SHARE * len(sizes) and all(s <= WILD_SPREAD for _, s in noisy):
        return []
    return [f"{n} nodes vary by {s:.0%} of their median{where}" for n, s in noisy]


def check(target, curve: VerifyCost, tree: bool = False) -> Optional[str]:
    """Time `CHECK_SIZES` at one context past the curve's own (`CHECK_ROUNDS` interleaved rounds)
    and say why the curve must be measured again, or None: a size that runs clearly faster
    than the curve says (the curve was measured while the machine was busy, or is not this
    machine's), or costs that grow with the size clearly unlike the curve's. A machine that is
    uniformly slower than its curve now is busy now: that is no reason."""
    sizes = tuple(n for n in CHECK_SIZES if n <= max(curve.sizes))
    room = target.max_context - max(sizes) - len(sizes) * (CHECK_ROUNDS + 1) - 1
    context = max(min(curve.past + CHECK_EXTRA, room), 1)
    got = timed_pass(target, sizes, context, CHECK_ROUNDS, tree, seed=7)
    ratios = []
    for n, seconds in zip(sizes, got.seconds):
        want = curve(n, context)
        ratios.append(seconds / want)
        if seconds * (1 + CHECK_TOLERANCE) < want and want - seconds > ABSOLUTE_SLACK:
            return (f"{n} nodes took {seconds * 1e3:.2f} ms after {context} tokens where the curve says "
                    f"{want * 1e3:.2f} ms")
    span = max(ratios) / min(ratios)
    if span > 1 + CHECK_SHAPE and max(got.seconds) - min(got.seconds) > ABSOLUTE_SLACK:
        return f"costs grow with the draft size unlike the curve (measured / curve {min(ratios):.2f}-{max(ratios):.2f})"
    return None


def _key(target, tree: bool) -> str:
    """The target (its weights as it runs them: new kernels, a new curve), the CPU, threads,
    where the curve is timed and over which shape of draft."""
    return fingerprint(target.fingerprint, cpu_name(), torch.get_num_threads(), SIZES, CONTEXTS,
                       "tree" if tree else "chain")


def path_for(target, cache_dir: Path, tree: bool = False) -> Path:
    """Where `cached` keeps the curve for this target, machine and thread count."""
    return cache_dir / "verify_cost" / f"{_key(target, tree)}.json"


_known: dict[Path, VerifyCost] = {}  # curves this process has read and checked, or measured


def cached(target, cache_dir: Path, tree: bool = False, now: Optional[float] = None) -> VerifyCost:
    """The curve for this target, machine and thread count, over chains or over branching
    trees (which may cost more per node: a 4-D mask, a gather at commit), with its `info`: read
    from disk and checked once per process (`check`), measured again when it fails or has
    expired, else measured and saved (unless provisional). The target's cache is left in an
    arbitrary state."""
    path = path_for(target, cache_dir, tree)
    if path in _known:
        return _known[path]
    now = time.time() if now is None else now
    saved, reason = _read(path)
    if saved is not None:
        curve, made_at = saved
        if now - made_at > MAX_AGE:
            reason = f"older than {MAX_AGE / 86400:.0f} days"
        else:
            reason = check(target, curve, tree) if os.environ.get("HVD_COST_CHECK", "1") != "0" else None
            if reason is None:
                _known[path] = curve
                return curve
    cost = _measured(target, path, tree, reason)
    _known[path] = cost
    return cost


def known() -> dict[str, CurveInfo]:
    """The curves this process has used so far: cache file name -> how each came to be."""
    return {path.stem: c.info for path, c in _known.items() if c.info is not None}


def use(target, cache_dir: Path, curve: VerifyCost, tree: bool = False) -> None:
    """Make `cached` return `curve` for this target and `cache_dir` from now on in this process,
    without reading or checking the disk (a benchmark comparing curves on one loaded target)."""
    _known[path_for(target, cache_dir, tree)] = curve


def forget() -> None:
    """Drop what this process has checked: the next `cached` call reads (and checks) anew."""
    _known.clear()


def _read(path: Path) -> tuple[Optional[tuple[VerifyCost, float]], str]:
    """((the saved curve with its info, when it was made), "") or (None, why it cannot be used:
    "" when there is none)."""
    try:
        d = json.loads(path.read_text())
    except OSError:
        return None, ""
    except ValueError:
        return None, "the cached file is not JSON"
    try:
        if d.get("format") != FORMAT:  # a curve saved without when and how it was made
            made_at = path.stat().st_mtime
            info = CurveInfo(path.stem, made_at, -1.0, -1.0, "cached")
            return (monotone(VerifyCost.from_dict(d).with_info(info)), made_at), ""
        made_at = float(d["made_at"])
        info = CurveInfo(path.stem, made_at, float(d["load"]), float(d["cpu_share"]), "cached")
        return (monotone(VerifyCost.from_dict(d["curve"]).with_info(info)), made_at), ""
    except (KeyError, TypeError, ValueError, AttributeError):
        return None, "the cached file is malformed"


def _least_loaded(tries: Sequence[Measured]) -> Measured:
    """Attempts that all failed their checks, as one provisional curve: each size's seconds and
    slope the least of the attempts' (other work only adds time), made non-decreasing."""
    first = tries[0].curve
    seconds = tuple(min(t.curve.seconds[i] for t in tries) for i in range(len(first.sizes)))
    slopes = tuple(min(t.curve.per_token[i] for t in tries) for i in range(len(first.per_token))) \
        if all(len(t.curve.per_token) == len(first.per_token) for t in tries) else first.per_token
    problems = min((t.problems for t in tries), key=len)
    return Measured(monotone(VerifyCost(first.sizes, seconds, first.past, slopes)), problems,
                    min(t.cpu_share for t in tries))


def _measured(target, path: Path, tree: bool, reason: Optional[str]) -> VerifyCost:
    """Measure (up to `ATTEMPTS` times until the checks pass); save a curve that passed."""
    load = os.getloadavg()[0]
    tries: list[Measured] = []
    for attempt in range(ATTEMPTS):
        tries.append(measure(target, tree=tree, seed=attempt))
        if not tries[-1].problems:
            break
    best = tries[-1] if not tries[-1].problems else _least_loaded(tries)
    made_at = time.time()
    if best.problems:
        status, why = "provisional", "; ".join(best.problems[:3])
    else:
        status, why = ("re-measured" if reason else "measured"), reason or ""
    info = CurveInfo(path.stem, made_at, load, best.cpu_share, status, why)
    if not best.problems:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"format": FORMAT, "curve": best.curve.to_dict(), "made_at": made_at,
                                   "load": load, "cpu_share": best.cpu_share}) + "\n")
        tmp.replace(path)  # atomic: a process reading it at once sees the old file or the new one
    return best.curve.with_info(info)
