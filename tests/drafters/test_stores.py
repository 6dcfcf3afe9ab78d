"""The engine's shared cross-request stores: one store fed by every method that reads it, and
within its bounds after many requests."""
import random

from hvd.drafters.base import DecodeContext
from hvd.drafters.stores import SharedStores
from hvd.drafters.suffix import SuffixDrafter


def simulate(drafters, requests: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    for r in range(requests):
        d = drafters[r % len(drafters)]
        prompt = [rng.randrange(1, 500) for _ in range(rng.randint(5, 60))]
        out = [rng.randrange(1, 500) for _ in range(rng.randint(1, 300))]
        d.begin(prompt)
        seq = list(prompt)
        for i in range(0, len(out), 7):
            d.propose(DecodeContext(seq, len(prompt), 8))
            d.observe(out[i : i + 7])
            seq += out[i : i + 7]
        d.end(out)


def test_bounded_after_1000_requests():
    stores = SharedStores(max_response_tokens=20_000)
    drafters = [SuffixDrafter(store=stores.responses) for _ in range(3)]
    simulate(drafters, 1000)
    s = stores.responses
    assert 0 < s.tokens <= 20_000
    assert s.index.live == s.tokens + s.responses  # one separator per kept response
    assert len(s.index.tokens) <= 4 * (20_000 + 300 + 1) * 2  # compaction keeps the arrays bounded
    assert stores.sizes() == {"responses": s.tokens}


def test_one_store_for_every_method_of_an_engine(tiny_exact_engine):
    e = tiny_exact_engine
    before = e.stores.responses.tokens
    e.generate([5, 6, 7, 5, 6, 7], method="suffix", max_new_tokens=12)
    e.generate([5, 6, 7, 5, 6, 7], method="rule-hybrid", max_new_tokens=12)
    assert e.stores.responses.tokens == before + 24
    assert e.drafter("suffix").store is e.drafter("rule-hybrid").cache.store is e.stores.responses
