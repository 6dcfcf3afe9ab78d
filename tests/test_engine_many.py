"""Many requests at once (`Engine.generate_many`): at 1, 4 and 16 concurrent requests, with mixed
methods and adversarial drafters, greedy and seeded sampling, different lengths and prompts, and
requests joining as others leave, every request's tokens are the ones it gets alone."""
import random

import pytest

from hvd.engine import Request
from hvd.errors import InputError

from conftest import VOCAB, ScriptedDrafter


def prompt(rng: random.Random) -> list[int]:
    n = rng.choice([3, 9, 40, 63, 64, 65, 130])  # across prefill chunks, cache groups and key blocks
    return [rng.randrange(1, VOCAB) for _ in range(n)]


def requests(engine, n: int, seed: int) -> list[Request]:
    """n varied requests; a scripted drafter is made per request (each its own instance)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        ids = prompt(rng)
        new = rng.choice([1, 5, 24, 60])
        sampled = rng.random() < 0.4
        kind = rng.choice(["ar", "pld", "suffix", "random", "wrong", "right"])
        drafter = None
        if kind in ("random", "wrong", "right"):
            ref = engine.generate(ids, method="ar", max_new_tokens=new).token_ids if kind == "right" else ()
            drafter = ScriptedDrafter(kind, ref, seed=i, size=rng.choice([4, 12]))
        out.append(Request(ids, "ar" if drafter else kind, new, temperature=0.8 if sampled else 0.0,
                           top_k=20 if sampled else 0, seed=1000 + i if sampled else None, drafter=drafter))
    return out


def alone(engine, r: Request) -> list[int]:
    if r.drafter is not None:
        r.drafter.rng = random.Random(0)  # a fresh script: `right`/`wrong` do not depend on it
    return engine.generate(r.prompt, method=r.method, max_new_tokens=r.max_new_tokens, temperature=r.temperature,
                           top_k=r.top_k, seed=r.seed, drafter=r.drafter).token_ids


@pytest.mark.parametrize("count,max_batch", [(1, 16), (4, 4), (16, 16), (16, 5)])
def test_every_request_gets_its_solo_tokens(tiny_exact_engine, count, max_batch):
    engine = tiny_exact_engine
    reqs = requests(engine, count, seed=count * 31 + max_batch)
    want = [alone(engine, r) for r in reqs]
    for r in reqs:
        if r.drafter is not None:
            r.drafter.rng = random.Random(0)
    got = engine.generate_many(reqs, max_batch=max_batch)
    for i, (g, w) in enumerate(zip(got, want)):
        assert g.token_ids == w, (i, reqs[i].method, reqs[i].temperature)
        assert g.stats.new_tokens == len(w)


def test_stream_many_interleaves_and_ends_each_request_once(tiny_exact_engine):
    reqs = [Request([5, 6, 7] * k, "pld", 8 * k) for k in (1, 3, 6)]
    seen, ends = [], {}
    for i, chunk in tiny_exact_engine.stream_many(reqs, max_batch=3):
        seen.append(i)
        if chunk.result is not None:
            ends[i] = ends.get(i, 0) + 1
    assert ends == {0: 1, 1: 1, 2: 1}
    assert seen.index(2) < max(j for j, x in enumerate(seen) if x == 0)  # not one request after another


def test_a_target_of_one_sequence_runs_them_in_turn(tiny_engine):
    reqs = [Request([3, 4, 5], "ar", 6), Request([9, 8, 7, 6], "suffix", 6)]
    got = tiny_engine.generate_many(reqs)
    assert [g.token_ids for g in got] == [tiny_engine.generate(r.prompt, method=r.method, max_new_tokens=6).token_ids
                                          for r in reqs]


def test_bad_batch_sizes_and_prompts_are_refused(tiny_exact_engine):
    with pytest.raises(InputError):
        tiny_exact_engine.generate_many([Request([1, 2], "ar", 3)], max_batch=0)
    with pytest.raises(InputError):
        tiny_exact_engine.generate_many([Request([1] * 300, "ar", 3)])  # beyond the context window


def test_a_next_turn_reuses_its_conversation_after_other_requests_ran(tiny_exact_engine):
    engine = tiny_exact_engine
    rng = random.Random(7)
    first = [rng.randrange(1, VOCAB) for _ in range(90)]
    turn1 = engine.generate_many([Request(first, "suffix", 20)])[0]
    others = [Request([rng.randrange(1, VOCAB) for _ in range(70)], "ar", 10) for _ in range(3)]
    engine.generate_many(others, max_batch=2)  # other agents in between
    second = first + turn1.token_ids + [rng.randrange(1, VOCAB) for _ in range(15)]  # + a tool result
    got = engine.generate_many([others[0], Request(second, "pld", 20)], max_batch=2)[1]
    assert got.token_ids == engine.generate(second, method="pld", max_new_tokens=20).token_ids
    assert got.stats.prompt_tokens_reused >= len(first) + len(turn1.token_ids) - 1


def test_the_prefix_cache_keeps_within_its_bytes():
    from hvd.targets.exact import ExactLlamaTarget
    from hvd.targets.sequences import PrefixCache, RequestSequence

    from conftest import tiny_llama

    target = ExactLlamaTarget(tiny_llama(seed=1))
    kept = PrefixCache(max_bytes=1)
    seq = RequestSequence(target, target.new_cache())
    target.forward_rows([seq.prefill_rows(list(range(1, 20)))])
    seq.prefilled()
    kept.put(seq)
    assert kept.tokens == 0  # larger than the bound: not kept
    roomy = PrefixCache(max_bytes=seq.cache.nbytes())
    roomy.put(seq)
    again, n = roomy.take(list(range(1, 12)))
    assert again is seq and n == 10 and seq.ids == list(range(1, 11)) and roomy.tokens == 0
