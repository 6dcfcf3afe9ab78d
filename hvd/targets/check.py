"""The load-time guard of exactness: a target's verify forwards must give every token bitwise
the logits that one-token decoding gives it, for every row count and shape the decode loop can
send (1 to max_draft_nodes + 1 rows, chains and trees, across cache-group and block boundaries,
after a prefill of any length)."""
from __future__ import annotations

from typing import Optional

import torch

from hvd.types import Draft


def row_counts(max_rows: int) -> list[int]:
    """Every count up to 17, then around each power of two, and the largest."""
    counts = set(range(1, min(max_rows, 17) + 1))
    p = 16
    while p <= max_rows:
        counts |= {c for c in (p - 1, p, p + 1) if 1 <= c <= max_rows}
        p *= 2
    counts.add(max_rows)
    return sorted(counts)


def check_exact(target, cut: int = 61, seed: int = 0, prefill: bool = True) -> Optional[str]:
    """None when, on this machine, a chain verify of every row count in `row_counts` and a
    branching tree give each token the bits one-token decoding gives it; else what differed.

    `cut` (the prompt length) puts the draft across an 8-slot group and a 64-slot block.
    `prefill`: also require a prefill's last logits to equal decoding's (a target whose
    prefill takes other kernels, shared by every method, is exact without it)."""
    max_rows = min(target.max_draft_nodes + 1, 64)
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, target.vocab_size, (cut + max_rows + 1,), generator=gen).tolist()
    target.prefill(ids[:cut])
    one = []
    for j in range(cut, cut + max_rows):  # plain decoding, one token a step
        one.append(target.verify(ids[j], Draft.empty())[0])
        target.commit([])
    one = torch.stack(one)
    for n in row_counts(max_rows):
        target.prefill(ids[:cut])
        got = target.verify(ids[cut], Draft.chain(ids[cut + 1 : cut + n]))
        if not torch.equal(got, one[:n]):
            return f"a {n}-row chain verify's logits differ from one-token decoding"
    target.prefill(ids[:cut])
    tree = Draft((ids[cut + 1], 7, ids[cut + 2], 9, ids[cut + 3]), (-1, -1, 0, 1, 2))
    if not torch.equal(target.verify(ids[cut], tree)[[0, 1, 3, 5]], one[:4]):
        return "a tree verify's logits differ from one-token decoding"
    target.commit([1, 3])  # the branch 7 -> 9: then decode on from the moved cache
    after = target.verify(ids[cut + 4], Draft.empty())[0]
    target.prefill(ids[:cut])
    for t in (ids[cut], 7, 9):
        target.verify(t, Draft.empty())
        target.commit([])
    if not torch.equal(after, target.verify(ids[cut + 4], Draft.empty())[0]):
        return "decoding after a branch commit differs from decoding the same tokens one at a time"
    if prefill:  # a prefill ending inside a group gives the last token decoding's logits
        target.prefill(ids[: cut + 5])
        last = target.verify(ids[cut + 5], Draft.empty())[0]
        if not torch.equal(target.prefill(ids[: cut + 6]), last):
            return "a prefill's last logits differ from one-token decoding"
    target.prefill(ids[:1])
    return None
