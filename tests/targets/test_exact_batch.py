"""The exact target over many sequences in one forward: each sequence's rows, beside other
sequences' prefill chunks, chains and trees, give bitwise the logits it gets alone, and alone
is the single-sequence target's own verify (so every request keeps its solo tokens)."""
import random

import pytest
import torch

from hvd.targets.exact import PREFILL_CHUNK
from hvd.targets.exact_kv import KVCache, Rows
from hvd.targets.protocol import verify_layout
from hvd.types import Draft

from conftest import VOCAB, random_ids


def prefill_rows(cache: KVCache, ids: list[int], start: int) -> Rows:
    end = min(start + PREFILL_CHUNK, len(ids))
    return Rows(cache, ids[start:end], start, torch.arange(start, end))


def prefilled(exact, ids: list[int]) -> KVCache:
    cache = exact.new_cache()
    for i in range(0, len(ids), PREFILL_CHUNK):
        exact.forward_rows([prefill_rows(cache, ids, i)])
    return cache


def verify_rows(cache: KVCache, past: int, root: int, draft: Draft) -> Rows:
    """The rows of a verify of `draft` after `past` committed tokens, as the target lays them out."""
    paths, pos = verify_layout(past, draft)
    return Rows(cache, [root, *draft.tokens], past, pos, paths)


def random_draft(rng: random.Random, n: int, tree: bool) -> Draft:
    if not tree:
        return Draft.chain([rng.randrange(VOCAB) for _ in range(n)])
    return Draft(tuple(rng.randrange(VOCAB) for _ in range(n)), tuple(rng.randint(-1, i - 1) for i in range(n)))


PROMPTS = (5, 63, 64, 65, 130)  # across the cache's 8-slot groups and 32/64-key blocks


@pytest.mark.parametrize("seed", range(3))
def test_verifies_batched_across_sequences_are_bitwise_each_alone_and_the_solo_target(exact, seed):
    rng = random.Random(seed)
    prompts = [random_ids(n, seed=10 * seed + i) for i, n in enumerate(PROMPTS)]
    caches = [prefilled(exact, p) for p in prompts]
    drafts = [random_draft(rng, rng.choice([0, 1, 4, 17, 40]), tree=i % 2 == 1) for i in range(len(prompts))]
    parts = [verify_rows(c, len(p), 7, d) for c, p, d in zip(caches, prompts, drafts)]
    alone = [exact.logits(exact.forward_rows([part])[0][0]) for part in parts]
    batched = exact.forward_rows(parts)[0]
    for i, (p, d) in enumerate(zip(prompts, drafts)):
        assert torch.equal(exact.logits(batched[i]), alone[i]), i
        exact.prefill(p)
        assert torch.equal(exact.verify(7, d), alone[i]), i  # the single-sequence target's own verify


def test_a_prefill_chunk_beside_other_sequences_decode_rows_changes_no_bit(exact):
    rng = random.Random(5)
    long, short = random_ids(150, seed=1), random_ids(40, seed=2)
    solo = prefilled(exact, long)
    want = exact.logits(exact.forward_rows([verify_rows(solo, len(long), 3, Draft.chain([4, 5]))])[0][0])
    other = prefilled(exact, short)
    mixed = exact.new_cache()
    past = len(short)
    for i in range(0, len(long), PREFILL_CHUNK):  # each chunk of `long` shares a forward with a step of `short`
        draft = random_draft(rng, rng.choice([0, 3, 9]), tree=bool(i % 2))
        out = exact.forward_rows([verify_rows(other, past, 1, draft), prefill_rows(mixed, long, i)])[0]
        alone = exact.forward_rows([verify_rows(other, past, 1, draft)])[0][0]
        assert torch.equal(exact.logits(out[0]), exact.logits(alone))
    got = exact.logits(exact.forward_rows([verify_rows(mixed, len(long), 3, Draft.chain([4, 5]))])[0][0])
    assert torch.equal(got, want)
