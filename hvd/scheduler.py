"""Continuous batching: requests join and leave between steps, and each step is one forward over
every running request's rows.

Each request runs the engine's one decode loop (a coroutine that yields the target work it needs:
`hvd.ops`); the scheduler answers the loops of up to `max_batch` requests with one
`forward_rows` call a step on a target that holds many sequences (`HoldsManySequences`), so a
long prompt's prefill goes in chunks beside the others' verifies, and the LM head runs once for
all argmax rows and once for all logits rows. Every row's numbers are those of its sequence
alone (the exact target's kernels), so each request's tokens are its solo tokens whatever runs
beside it.

Admission is first come, first served: a request starts when fewer than `max_batch` run and its
KV cache, at the most it may grow to (prompt, new tokens, one verify's draft), fits the KV
budget beside those of the running requests. A request starts from the longest kept prefix of
an earlier request (`PrefixCache`): an agent's next turn prefills only its new tokens. A
request that cannot share a forward (a target of one sequence; a drafter that reads the
target's hidden states or drafts on the target's own sequence) runs alone, when nothing else runs.

Speculation is priced for the batch: each step's wall time teaches `BatchStepCost` the step's
fixed part and per-row cost, and a request's verify is charged its share of the fixed part
plus its own rows' marginal cost (`Verified.seconds`), which is what the methods that size
drafts by cost learn from (hvd/cost/batch.py). Alone, a request is charged its own clock.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Callable, Hashable, Iterator, Optional, Union

import time

import torch

from hvd.cost.batch import BatchStepCost
from hvd.errors import InputError
from hvd.ops import Chunk, Commit, Prefill, Verified, Verify
from hvd.targets.sequences import HoldsManySequences, PrefixCache, RequestSequence

Key = Hashable


@dataclass
class _Waiting:
    key: Key
    prepared: tuple  # (ids, method, drafter, GenerationConfig), as the engine prepared it
    alone: bool  # cannot share a forward
    reserve: int  # KV bytes its cache will hold


@dataclass
class _Running:
    """A request in the batch: its decode loop, its sequence, the target work it waits for."""

    steps: object  # the decode loop (a generator)
    seq: RequestSequence
    reserve: int
    op: Optional[Union[Prefill, Verify]] = None
    reused: int = 0  # prompt tokens whose keys came from an earlier request's cache


class Scheduler:
    """Runs submitted requests together (see the module docstring). Not thread-safe: one thread
    submits, cancels and steps."""

    def __init__(self, target, prefixes: PrefixCache, loop: Callable, solo: Callable, max_batch: int = 16,
                 kv_budget: Optional[int] = None) -> None:
        """`loop(*prepared)`: a request's decode loop; `solo(*prepared)`: its chunks decoded alone
        on the target's own sequence. `kv_budget` None: no bound but `max_batch`."""
        if max_batch < 1:
            raise InputError("max_batch must be at least 1")
        if kv_budget is not None and kv_budget <= 0:
            raise InputError("the KV budget must be positive")
        self.target, self.prefixes, self._loop, self._solo = target, prefixes, loop, solo
        self.max_batch, self.kv_budget = max_batch, kv_budget
        self.batched = isinstance(target, HoldsManySequences)
        self._per_slot = _slot_bytes(target) if self.batched else 0
        self.waiting: deque[_Waiting] = deque()
        self.running: dict[Key, _Running] = {}
        self._alone: Optional[tuple[Key, Iterator[Chunk]]] = None
        self.step_cost = BatchStepCost()

    def __len__(self) -> int:
        """Requests submitted and not yet finished or cancelled."""
        return len(self.waiting) + len(self.running) + (self._alone is not None)

    @property
    def active(self) -> int:
        """Requests decoding now (the rest wait)."""
        return len(self.running) + (self._alone is not None)

    @property
    def room(self) -> int:
        """How many more requests may be submitted before one would wait behind a full batch."""
        return max(0, self.max_batch - len(self))

    def slots(self, prepared: tuple) -> int:
        """The KV slots a request may fill: its prompt, its new tokens and one verify's draft."""
        ids, _, _, cfg = prepared
        return min(len(ids) + cfg.max_new_tokens, self.target.max_context) + self.target.max_draft_nodes + 1

    def kv_bytes(self, prepared: tuple) -> int:
        """The KV bytes a request's cache is given (its `slots`, as `KVCache.reserve` rounds them)."""
        return _capacity(self.slots(prepared)) * self._per_slot

    def submit(self, key: Key, prepared: tuple) -> None:
        """Queue a prepared request under `key` (unique among those not finished); InputError if
        its cache alone would exceed the KV budget."""
        _, _, drafter, _ = prepared
        alone = not self.batched or (drafter is not None and drafter.capabilities.alone)
        need = 0 if alone else self.kv_bytes(prepared)
        if self.kv_budget is not None and need > self.kv_budget:
            raise InputError(f"the request's KV cache may reach {need / 2**20:.0f} MiB (its prompt and max_tokens), "
                             f"more than the KV budget of {self.kv_budget / 2**20:.0f} MiB")
        self.waiting.append(_Waiting(key, prepared, alone, need))

    def cancel(self, key: Key) -> bool:
        """Stop request `key` (waiting or running); its loop is closed, and a running request's
        committed tokens are kept as a prefix. False if it is not here."""
        for w in self.waiting:
            if w.key == key:
                self.waiting.remove(w)
                return True
        if self._alone is not None and self._alone[0] == key:
            self._alone[1].close()
            self._alone = None
            return True
        r = self.running.pop(key, None)
        if r is None:
            return False
        r.steps.close()
        r.seq.pending = []
        self.prefixes.put(r.seq)
        return True

    def step(self) -> list[tuple[Key, Union[Chunk, Exception]]]:
        """Admit what fits, then one step: a forward over every running request's rows, or the
        next chunk of the request that runs alone. (key, Chunk) for each chunk made; a request's
        last chunk carries its Result and it leaves. A request whose own decode loop raises
        leaves with (key, the exception); an error of the forward itself is raised (every
        running request's state is then unknown: discard the scheduler)."""
        out: list = []
        self._admit(out)
        if self._alone is not None:
            key, chunks = self._alone
            try:
                chunk = next(chunks, None)
            except Exception as e:
                self._alone = None
                out.append((key, e))
                return out
            if chunk is None or chunk.result is not None:
                self._alone = None
            if chunk is not None:
                out.append((key, chunk))
        elif self.running:
            self._forward(out)
        return out

    def run(self) -> Iterator[tuple[Key, Chunk]]:
        """Step until every submitted request has finished; a request's error is raised."""
        while len(self):
            for key, item in self.step():
                if isinstance(item, Exception):
                    raise item
                yield key, item

    def _fits(self, w: _Waiting) -> bool:
        if w.alone:
            return not self.running and self._alone is None
        if self._alone is not None or len(self.running) >= self.max_batch:
            return False
        used = sum(r.reserve for r in self.running.values())
        return self.kv_budget is None or used + w.reserve <= self.kv_budget

    def _admit(self, out: list) -> None:
        while self.waiting and self._fits(self.waiting[0]):
            w = self.waiting.popleft()
            if w.alone:
                self._alone = (w.key, iter(self._solo(*w.prepared)))
                return
            seq, reused = self.prefixes.take(w.prepared[0])
            seq = seq or RequestSequence(self.target, self.target.new_cache())
            seq.cache.reserve(self.slots(w.prepared))  # all at once: the cache never grows (or copies) mid-way
            r = _Running(self._loop(*w.prepared), seq, max(w.reserve, seq.cache.nbytes()), reused=reused)
            self.running[w.key] = r
            self._advance(w.key, r, None, out)

    def _forward(self, out: list) -> None:
        order = list(self.running.items())
        parts = [r.seq.prefill_rows(r.op.ids) if isinstance(r.op, Prefill) else r.seq.verify_rows(r.op.root, r.op.draft)
                 for _, r in order]
        t0 = time.perf_counter()
        hidden, _ = self.target.forward_rows(parts)
        rows: dict[Key, torch.Tensor] = {}  # request -> the rows its reply reads from the LM head
        for (key, r), h in zip(order, hidden):
            if isinstance(r.op, Prefill):
                r.seq.prefilled()
                if r.seq.cached_len == len(r.op.ids):
                    rows[key] = h[-1:]  # else more chunks to go
            else:
                rows[key] = h
        replies = self._head(rows)
        total = sum(len(part.ids) for part in parts)
        self.step_cost.add(total, time.perf_counter() - t0)
        for (key, r), part in zip(order, parts):
            if key in replies:
                reply = replies[key]
                if isinstance(r.op, Verify):
                    reply = Verified(reply, None if len(order) == 1 else self.step_cost.charge(len(part.ids), len(order)))
                self._advance(key, r, reply, out)

    def _head(self, rows: dict[Key, torch.Tensor]) -> dict:
        """Each request's reply from its rows: a prefill's logits (vocab,), a greedy verify's
        argmax per row, a sampled verify's logits; the LM head runs once for all argmax rows and
        once for all logits rows (each row's numbers are its own whatever shares the call)."""
        greedy = [k for k in rows if isinstance(self.running[k].op, Verify) and self.running[k].op.greedy]
        full = [k for k in rows if k not in greedy]
        out: dict = {}
        if greedy:
            best = self.target.argmax(torch.cat([rows[k] for k in greedy]))
            at = 0
            for k in greedy:
                out[k], at = best[at : at + rows[k].shape[0]], at + rows[k].shape[0]
        if full:
            logits = self.target.logits(torch.cat([rows[k] for k in full]))
            at = 0
            for k in full:
                n = rows[k].shape[0]
                out[k] = logits[at] if isinstance(self.running[k].op, Prefill) else logits[at : at + n]
                at += n
        return out

    def _advance(self, key: Key, r: _Running, reply, out: list) -> None:
        """Run request `key`'s loop until it waits for a forward or ends."""
        while True:
            try:
                item = r.steps.send(reply)
            except StopIteration:
                self.running.pop(key, None)
                return
            except Exception as e:
                self.running.pop(key, None)
                out.append((key, e))
                return
            reply = None
            if isinstance(item, Chunk):
                if item.result is not None:
                    item.result.stats.prompt_tokens_reused = r.reused
                    self.running.pop(key, None)
                    self.prefixes.put(r.seq)
                out.append((key, item))
                if item.result is not None:
                    r.steps.close()
                    return
            elif isinstance(item, Commit):
                r.seq.commit(item.path)
            elif isinstance(item, (Prefill, Verify)):
                r.op = item
                return
            else:
                raise AssertionError("hidden states are not read in a batch")


def _slot_bytes(target: HoldsManySequences) -> int:
    """KV bytes one slot of the target's sequences holds."""
    c = target.new_cache()
    return c.layers * c.kv_heads * c.head_dim * 2 * 2  # keys and values, float16


def _capacity(slots: int) -> int:
    """The slots a cache reserved for `slots` holds (`KVCache.reserve`)."""
    return -(-max(slots, 256) // 64) * 64
