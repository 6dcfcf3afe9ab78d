"""Verification: which draft tokens the target accepts, and the bonus token after them.

Greedy: walk down the tree, at each node following the child equal to the target's argmax;
the bonus is the argmax after the last accepted node. Output equals plain greedy decoding.

Sampling, keyed by position: the token at sequence position t is argmax_x p(x) / E_t(x),
where p is the target's distribution there (temperature, top-k, top-p applied) and E_t are
i.i.d. Exp(1) variables drawn from (seed, t) alone — the exponential-race form of the
Gumbel-max trick, so the token is distributed exactly as p. Verification walks the tree as in
greedy decoding, with that keyed draw in place of the argmax. Every committed token is
therefore the very token plain sampling (`ar`) draws at that position with the same seed,
whatever was drafted: lossless by construction, and a seed reproduces the output for every
method. (Drafts are deterministic here, so acceptance is what rejection sampling would give:
a drafted x is accepted with probability p(x).)

Under a grammar (`Constraint`): the same walk over the logits with every token the grammar
refuses at that node taken out first (greedy: the best allowed token; sampling: the keyed draw
from the distribution renormalised over the allowed tokens) — exactly constrained plain
decoding, token by token, so still lossless; the constraint consumes each committed token as
the walk goes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol, Sequence, runtime_checkable

import numpy as np
import torch

from hvd.types import Draft


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 = off

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


def target_probs(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """(vocab,) logits -> (vocab,) the distribution plain sampling draws from."""
    z = logits.float() / params.temperature
    if params.top_k > 0 and params.top_k < z.numel():
        kth = torch.topk(z, params.top_k).values[-1]
        z = z.masked_fill(z < kth, float("-inf"))
    p = torch.softmax(z, dim=-1)
    if params.top_p < 1.0:
        sorted_p, order = torch.sort(p, descending=True)
        before = torch.cumsum(sorted_p, dim=-1) - sorted_p  # mass of strictly more likely tokens
        drop = before >= params.top_p
        p = p.scatter(0, order, sorted_p.masked_fill(drop, 0.0))
        p = p / p.sum()
    return p


class KeyedSampler:
    """Plain sampling whose randomness is keyed by sequence position (see the module doc)."""

    def __init__(self, params: SamplingParams, seed: int) -> None:
        self.params = params
        self.seed = int(seed) & (2 ** 64 - 1)

    def __call__(self, logits: torch.Tensor, position: int) -> int:
        """The token drawn at `position` from the distribution of (vocab,) `logits`."""
        p = target_probs(logits, self.params)
        e = np.random.default_rng([self.seed, int(position)]).standard_exponential(p.numel())  # float64
        return int(torch.argmax(p.double() / torch.from_numpy(e)))


def _children(draft: Draft) -> list[list[int]]:
    kids: list[list[int]] = [[] for _ in range(len(draft) + 1)]  # kids[parent + 1]
    for i, p in enumerate(draft.parents):
        kids[p + 1].append(i)
    return kids


def argmax_rows(logits: torch.Tensor) -> list[int]:
    """Each row's argmax, the first index of its maximum (as torch.argmax and numpy.argmax both
    define it). CPU float32 rows go through numpy, whose argmax costs far less than torch's on
    one thread."""
    if logits.device.type == "cpu" and logits.dtype == torch.float32:
        return logits.detach().numpy().argmax(axis=-1).tolist()
    return logits.argmax(dim=-1).tolist()


def verify_greedy(logits: torch.Tensor, draft: Draft) -> tuple[list[int], int]:
    """logits (1+n, vocab): row 0 after the root, row i+1 after draft node i.

    Returns (accepted path as draft node indices, bonus token)."""
    return accept_greedy(argmax_rows(logits), draft)


@runtime_checkable
class VerifiesArgmax(Protocol):
    """A target capability: each row's argmax of `verify`'s logits, without the logits (the int8
    target's LM head takes it as it goes)."""

    def verify_argmax(self, root: int, draft: Draft) -> list[int]: ...


def argmax_verifier(target) -> Callable[[int, Draft], list[int]]:
    """A verify on `target` read as each row's argmax, (root, draft) -> (1+n,): through its fused
    `verify_argmax` (without the logits) when it has one — checked here, once — else through its
    logits."""
    if isinstance(target, VerifiesArgmax):
        return target.verify_argmax
    return lambda root, draft: argmax_rows(target.verify(root, draft))


def greedy_verifier(target) -> Callable[[int, Draft], tuple[list[int], int]]:
    """One greedy verification on `target`, (root, draft) -> (accepted path, bonus)."""
    rows = argmax_verifier(target)
    return lambda root, draft: accept_greedy(rows(root, draft), draft)


def accept_greedy(best: Sequence[int], draft: Draft) -> tuple[list[int], int]:
    """`verify_greedy` from each row's argmax `best` (1+n,)."""
    kids = _children(draft)
    path: list[int] = []
    node = -1
    while True:
        want = best[node + 1]
        nxt = next((c for c in kids[node + 1] if draft.tokens[c] == want), None)
        if nxt is None:
            return path, want
        path.append(nxt)
        node = nxt


def verify_keyed(logits: torch.Tensor, draft: Draft, sample: KeyedSampler, position: int) -> tuple[list[int], int]:
    """Like `verify_greedy`, with the keyed draw at each visited row; row 0 predicts sequence
    position `position`, a node at depth d predicts position + d."""
    kids = _children(draft)
    path: list[int] = []
    node = -1
    while True:
        want = sample(logits[node + 1], position + len(path))
        nxt = next((c for c in kids[node + 1] if draft.tokens[c] == want), None)
        if nxt is None:
            return path, want
        path.append(nxt)
        node = nxt


@runtime_checkable
class Constraint(Protocol):
    """A request's grammar state (hvd/constraints/grammar.py `Matcher`)."""

    def allowed(self) -> np.ndarray: ...  # (vocab,) bool: what may come next

    def consume(self, token: int) -> None: ...


def allowed_only(logits: torch.Tensor, allowed: np.ndarray) -> torch.Tensor:
    """A float32 copy of a (vocab,) logits row with every token `allowed` (bool) does not hold at -inf."""
    row = logits.detach().float().clone()
    row[torch.from_numpy(~allowed[: row.numel()])] = float("-inf")
    return row


def accept_constrained(logits: torch.Tensor, draft: Draft, constraint: Constraint,
                       pick: Callable[[torch.Tensor, int], int]) -> tuple[list[int], int]:
    """Like `verify_greedy` / `verify_keyed`, each visited row restricted to what `constraint`
    allows there; `pick(row, depth)` chooses from a restricted row (its argmax, or the keyed draw
    at the row's position). The constraint has consumed the accepted path and the bonus."""
    kids = _children(draft)
    path: list[int] = []
    node = -1
    while True:
        want = pick(allowed_only(logits[node + 1], constraint.allowed()), len(path))
        constraint.consume(want)
        nxt = next((c for c in kids[node + 1] if draft.tokens[c] == want), None)
        if nxt is None:
            return path, want
        path.append(nxt)
        node = nxt
