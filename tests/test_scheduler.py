"""The continuous-batching scheduler (hvd/scheduler.py) as a server drives it: requests submitted
while others run, cancelled mid-way, held back by the KV budget; each request's tokens are its
solo tokens, and a verify in a batch is charged its share of the step."""
import random
import statistics

import pytest

from hvd.engine import Request
from hvd.errors import InputError

from conftest import VOCAB


def ids(seed: int, n: int = 20) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(1, VOCAB) for _ in range(n)]


def drive(sched, arrivals: dict[int, list], cancel_at: dict = {}) -> dict:
    """Step `sched`, submitting arrivals[step] before that step and cancelling cancel_at[step];
    {key: (token ids, result or None)}."""
    out: dict = {}
    step = 0
    while len(sched) or any(s >= step for s in arrivals):
        for key, prepared in arrivals.get(step, []):
            sched.submit(key, prepared)
        for key in cancel_at.get(step, []):
            assert sched.cancel(key)
        for key, chunk in sched.step():
            toks, _ = out.get(key, ([], None))
            out[key] = (toks + chunk.token_ids, chunk.result)
        step += 1
        assert step < 10_000
    return out


def test_requests_that_arrive_while_others_run_get_their_solo_tokens(tiny_exact_engine):
    e = tiny_exact_engine
    reqs = {k: Request(ids(k, 10 + 7 * k), ("ar", "pld", "suffix", "hvd")[k % 4], 12 + 5 * (k % 3),
                       temperature=0.7 if k % 2 else 0.0, seed=k) for k in range(10)}
    want = {k: e.generate(r.prompt, method="ar", max_new_tokens=r.max_new_tokens, temperature=r.temperature,
                          seed=r.seed).token_ids for k, r in reqs.items()}
    sched = e.scheduler(max_batch=4)
    arrivals = {3 * k: [(k, e.ready(r))] for k, r in reqs.items()}  # one every 3 steps
    got = drive(sched, arrivals)
    assert {k: toks for k, (toks, _) in got.items()} == want
    assert all(res is not None and res.token_ids == want[k] for k, (_, res) in got.items())


def test_a_cancelled_request_leaves_and_the_others_go_on(tiny_exact_engine):
    e = tiny_exact_engine
    reqs = {k: Request(ids(k), "ar", 30) for k in range(4)}
    sched = e.scheduler(max_batch=4)
    got = drive(sched, {0: [(k, e.ready(r)) for k, r in reqs.items()]}, cancel_at={5: [1]})
    assert got[1][1] is None and 0 < len(got[1][0]) < 30  # cancelled: no result
    for k in (0, 2, 3):
        assert got[k][1].token_ids == e.generate(reqs[k].prompt, method="ar", max_new_tokens=30).token_ids
    assert not sched.cancel(1) and len(sched) == 0


def test_the_kv_budget_holds_a_request_back_until_another_leaves(tiny_exact_engine):
    e = tiny_exact_engine
    a, b = e.ready(Request(ids(1), "ar", 20)), e.ready(Request(ids(2), "ar", 20))
    sched = e.scheduler(max_batch=4, kv_budget=e.scheduler().kv_bytes(a))
    sched.submit("a", a)
    sched.submit("b", b)
    sched.step()
    assert set(sched.running) == {"a"} and sched.active == 1 and len(sched) == 2
    out = drive(sched, {})
    assert out["b"][1].token_ids == e.generate(ids(2), method="ar", max_new_tokens=20).token_ids
    with pytest.raises(InputError, match="KV budget"):
        e.scheduler(kv_budget=1).submit("c", a)


class Recorder:
    """A drafter that drafts nothing and records what each verify was charged."""

    name = "recorder"

    def __init__(self):
        from hvd.drafters.base import Capabilities

        self.capabilities = Capabilities()
        self.charges = []

    def begin(self, prompt): ...

    def observe(self, committed): ...

    def end(self, out): ...

    def propose(self, ctx):
        from hvd.types import Draft

        return Draft((7, 8), (-1, 0))

    def verified(self, nodes, seconds, context):
        self.charges.append(seconds)


def test_a_verify_in_a_batch_is_charged_its_share_of_the_step(tiny_exact_engine):
    e = tiny_exact_engine
    alone, crowd = Recorder(), Recorder()
    e.generate_many([Request(ids(1), "ar", 16, drafter=alone)], max_batch=4)
    others = [Request(ids(k), "ar", 40) for k in range(2, 9)]
    sched = e.scheduler(max_batch=8)
    sched.submit("me", e.ready(Request(ids(1), "ar", 16, drafter=crowd)))
    for k, r in enumerate(others):
        sched.submit(k, e.ready(r))
    list(sched.run())
    line = sched.step_cost.line()
    assert line.fixed > 0 and line.per_row > 0
    assert len(crowd.charges) == len(alone.charges) > 4
    # in the batch a request pays an eighth of the fixed part: less than alone
    assert statistics.median(crowd.charges) < statistics.median(alone.charges)
