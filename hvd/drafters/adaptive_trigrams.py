"""Tri-gram weights that adapt during decoding (ADED): a static table plus an overlay.

Entries of the static table change weight in place (on this object's own copy of the weight
array). Tri-grams the table lacks go to an overlay: an open-addressing hash of bigram keys, each
slot holding up to `overlay_successors` (token, weight) pairs. Lookups merge both.

The arrays travel to the numba kernels as one tuple, `state`:
    (vocab, keys, offsets, succ, weight, ov_keys, ov_count, ov_succ, ov_weight)
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from numba import njit

from hvd.drafters.trigram import TrigramTable

EMPTY = -1  # an unused overlay slot's key


@njit(cache=True)
def _find_static(keys, key):
    """Index of `key` in the sorted keys, or -1."""
    lo, hi = 0, keys.shape[0]
    while lo < hi:
        mid = (lo + hi) // 2
        if keys[mid] < key:
            lo = mid + 1
        else:
            hi = mid
    if lo < keys.shape[0] and keys[lo] == key:
        return lo
    return -1


@njit(cache=True)
def _probe(ov_keys, key):
    """Slot of `key` in the overlay hash, or the empty slot where it would go."""
    mask = ov_keys.shape[0] - 1
    h = (key + 2) * 0x9E3779B1  # wraps in int64
    h = (h ^ (h >> 17)) & mask
    while ov_keys[h] != EMPTY and ov_keys[h] != key:
        h = (h + 1) & mask
    return h


@njit(cache=True)
def successors(state, a, b, out_tok, out_w):
    """Write the successors of (a, b) into out_tok / out_w ((cap,) each); return how many."""
    vocab, keys, offsets, succ, weight, ov_keys, ov_count, ov_succ, ov_weight = state
    key = a * vocab + b
    n = 0
    i = _find_static(keys, key)
    if i >= 0:
        for e in range(offsets[i], offsets[i + 1]):
            if n < out_tok.shape[0]:
                out_tok[n], out_w[n] = succ[e], weight[e]
                n += 1
    s = _probe(ov_keys, key)
    if ov_keys[s] == key:
        for j in range(ov_count[s]):
            if n < out_tok.shape[0]:
                out_tok[n], out_w[n] = ov_succ[s, j], ov_weight[s, j]
                n += 1
    return n


@njit(cache=True)
def _bump(state, a, b, c, delta, cap):
    """Add delta (capped) to the weight of a -> b -> c; returns 1 if it took a new overlay slot."""
    vocab, keys, offsets, succ, weight, ov_keys, ov_count, ov_succ, ov_weight = state
    key = a * vocab + b
    i = _find_static(keys, key)
    if i >= 0:
        for e in range(offsets[i], offsets[i + 1]):
            if succ[e] == c:
                weight[e] = min(weight[e] + delta, cap)
                return 0
    s = _probe(ov_keys, key)
    new_slot = 0
    if ov_keys[s] == EMPTY:
        ov_keys[s], ov_count[s] = key, 0
        new_slot = 1
    for j in range(ov_count[s]):
        if ov_succ[s, j] == c:
            ov_weight[s, j] = min(ov_weight[s, j] + delta, cap)
            return new_slot
    if ov_count[s] < ov_succ.shape[1]:  # a full slot drops further new successors
        ov_succ[s, ov_count[s]], ov_weight[s, ov_count[s]] = c, min(delta, cap)
        ov_count[s] += 1
    return new_slot


@njit(cache=True)
def _adapt(state, window, delta, cap):
    """Bump every tri-gram of window ((w,) int64); returns the overlay slots taken."""
    taken = 0
    for i in range(window.shape[0] - 2):
        taken += _bump(state, window[i], window[i + 1], window[i + 2], delta, cap)
    return taken


class AdaptiveTrigrams:
    """A static table's weights, adapted online, plus an overlay of tri-grams it lacks."""

    def __init__(self, table: TrigramTable, overlay_successors: int = 12, overlay_slots: int = 1024,
                 max_overlay: int = 1 << 16) -> None:
        """`max_overlay`: overlay bigrams (slots of up to `overlay_successors` successors) held
        at most; an adaptation that could pass it clears the overlay first (the static weights'
        adaptation is kept). Memory stays below ~4 * max_overlay * (8 + 8 * successors) bytes."""
        self.table = table
        self.overlay_successors = overlay_successors
        self.max_overlay = max_overlay
        self._initial_slots = overlay_slots
        self.reset()

    def reset(self) -> None:
        """Forget every adaptation: static weights as built, empty overlay."""
        self.weight = np.array(self.table.weight, dtype=np.float32)  # (E,) own, writable copy
        self._clear_overlay()

    def _clear_overlay(self) -> None:
        slots = 1 << max(4, int(self._initial_slots - 1).bit_length())
        self.ov_keys = np.full(slots, EMPTY, np.int64)  # (S,) bigram key per slot
        self.ov_count = np.zeros(slots, np.int32)  # (S,) successors held per slot
        self.ov_succ = np.zeros((slots, self.overlay_successors), np.int32)  # (S, M)
        self.ov_weight = np.zeros((slots, self.overlay_successors), np.float32)  # (S, M)
        self.overlay_used = 0
        self.state = self._pack()

    def _pack(self) -> tuple:
        t = self.table
        return (np.int64(t.vocab), np.asarray(t.keys, np.int64), np.asarray(t.offsets, np.int64),
                np.asarray(t.succ, np.int32), self.weight, self.ov_keys, self.ov_count, self.ov_succ, self.ov_weight)

    def adapt(self, window: Sequence[int], delta: float, cap: float) -> None:
        """Add `delta` (capped at `cap`) to every tri-gram in `window`, creating missing ones."""
        if len(window) < 3:
            return
        if min(window) < 0 or max(window) >= self.table.vocab:  # builtins: a window is a few dozen tokens
            window = [t for t in window if 0 <= t < self.table.vocab]  # tokens outside the table's vocabulary are skipped
        w = np.asarray(window, dtype=np.int64)  # (w,)
        if self.overlay_used + w.shape[0] > self.max_overlay:
            self._clear_overlay()
        if 2 * (self.overlay_used + w.shape[0]) > self.ov_keys.shape[0]:
            self._grow(2 * (self.overlay_used + w.shape[0]))
        self.overlay_used += int(_adapt(self.state, w, np.float32(delta), np.float32(cap)))

    def successors(self, a: int, b: int) -> dict[int, float]:
        """{c: weight} of (a, b), static and overlay merged (for tests and inspection)."""
        cap = self.table.n_entries + self.overlay_successors
        tok = np.zeros(min(cap, 4096), np.int64)  # (cap,)
        w = np.zeros(tok.shape[0], np.float32)  # (cap,)
        n = successors(self.state, np.int64(a), np.int64(b), tok, w)
        return dict(zip(tok[:n].tolist(), w[:n].tolist()))

    def _grow(self, need: int) -> None:
        """Rehash the overlay into at least 2 * need slots."""
        old = (self.ov_keys, self.ov_count, self.ov_succ, self.ov_weight)
        slots = 1 << max(4, int(2 * need - 1).bit_length())
        self.ov_keys = np.full(slots, EMPTY, np.int64)
        self.ov_count = np.zeros(slots, np.int32)
        self.ov_succ = np.zeros((slots, self.overlay_successors), np.int32)
        self.ov_weight = np.zeros((slots, self.overlay_successors), np.float32)
        _rehash(old[0], old[1], old[2], old[3], self.ov_keys, self.ov_count, self.ov_succ, self.ov_weight)
        self.state = self._pack()


@njit(cache=True)
def _rehash(keys, count, succ, weight, new_keys, new_count, new_succ, new_weight):
    for i in range(keys.shape[0]):
        if keys[i] != EMPTY:
            s = _probe(new_keys, keys[i])
            new_keys[s], new_count[s] = keys[i], count[i]
            for j in range(count[i]):
                new_succ[s, j], new_weight[s, j] = succ[i, j], weight[i, j]
