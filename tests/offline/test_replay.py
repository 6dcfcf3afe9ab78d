"""Replay mirrors the engine: the same drafter calls, the same accepted lengths, the same τ."""
from __future__ import annotations

import pytest

from hvd.offline.replay import StepRecord, replay, tau
from hvd.drafters.oracle import OracleDrafter
from hvd.drafters.pld import PromptLookupDrafter
from hvd.drafters.suffix import SuffixDrafter
from hvd.engine import Engine
from hvd.types import Draft

from tests.conftest import Recorder, ScriptedDrafter

N = 60
PROMPTS = [
    "def add(a, b):\n    return a + b\n\ndef add(a, b):\n",
    "the cat sat on the mat. the cat sat on the",
    "x = [1, 2, 3]\ny = [1, 2, 3]\nz = [1, 2,",
    "hello world",
]
DRAFTERS = {"pld": PromptLookupDrafter, "suffix": SuffixDrafter}


def _ids(engine: Engine, prompt: str) -> list[int]:
    return engine.encode(prompt)


# ---- the accepted path ----------------------------------------------------------------------


def test_accepted_path_on_chains_and_trees():
    assert Draft.empty().accepted_path([1, 2]) == []
    assert Draft.chain([1, 2, 3]).accepted_path([1, 2, 9]) == [0, 1]
    assert Draft.chain([1, 2, 3]).accepted_path([1, 2, 3, 4]) == [0, 1, 2]
    assert Draft.chain([1, 2, 3]).accepted_path([1, 2]) == [0, 1]  # never past the reference's end
    assert Draft.chain([5]).accepted_path([1]) == []
    # root ─ 1 ─ 2          the deeper branch 1 ─ 7 ─ 8 wins when the reference goes 1, 7, 8
    #      └ 3  1 ─ 7 ─ 8
    tree = Draft((1, 2, 3, 7, 8), (-1, 0, -1, 0, 3))
    assert tree.accepted_path([1, 7, 8, 0]) == [0, 3, 4]
    assert tree.accepted_path([1, 2, 0]) == [0, 1]
    assert tree.accepted_path([3, 3]) == [2]
    dup = Draft((1, 1, 2), (-1, -1, 1))  # equal siblings: the first one, as verify_greedy takes
    assert dup.accepted_path([1, 2]) == [0]


def test_accepted_path_agrees_with_greedy_verification_on_random_trees():
    import random

    import torch

    from hvd.verify import verify_greedy

    rng = random.Random(0)
    for _ in range(300):
        n = rng.randint(0, 12)
        tree = Draft(tuple(rng.randrange(4) for _ in range(n)), tuple(rng.randint(-1, i - 1) for i in range(n)))
        cont = [rng.randrange(4) for _ in range(14)]
        logits = torch.zeros(1 + n, 4)
        # row 0 after the root, row i+1 after node i: the argmax is the continuation at that depth
        for row, d in enumerate([0, *tree.depths()]):
            logits[row, cont[d]] = 1.0
        path, bonus = verify_greedy(logits, tree)
        assert tree.accepted_path(cont) == path
        assert bonus == cont[len(path)]


# ---- replay against the engine ------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(DRAFTERS))
@pytest.mark.parametrize("prompt", PROMPTS)
def test_replay_tau_equals_the_real_engine_tau(tiny_engine, name, prompt):
    ids = _ids(tiny_engine, prompt)
    real = tiny_engine.generate(ids, max_new_tokens=N, drafter=DRAFTERS[name]())
    ref = tiny_engine.generate(ids, method="ar", max_new_tokens=N).token_ids
    assert real.token_ids == ref
    records = replay(DRAFTERS[name](), ids, ref, limit=N)
    assert [r.accepted for r in records] == [s.accepted for s in real.stats.steps]
    assert [r.draft_len for r in records] == [s.draft_len for s in real.stats.steps]
    assert tau(records) == real.stats.mean_accepted_length
    assert sum(r.committed for r in records) == len(ref) - 1


def test_replay_mirrors_learning_across_requests(tiny_engine):
    """suffix keeps earlier responses: the second request of a prompt is accepted almost whole,
    in the engine and in replay alike (the random tiny model rarely repeats itself otherwise)."""
    ids = _ids(tiny_engine, PROMPTS[0])
    ref = tiny_engine.generate(ids, method="ar", max_new_tokens=N).token_ids
    real, replayed = SuffixDrafter(), SuffixDrafter()
    for _ in range(2):
        res = tiny_engine.generate(ids, max_new_tokens=N, drafter=real)
        records = replay(replayed, ids, ref, limit=N)
        assert [r.accepted for r in records] == [s.accepted for s in res.stats.steps]
        assert tau(records) == res.stats.mean_accepted_length
    assert tau(records) > 5


@pytest.mark.parametrize("make", [lambda ref: PromptLookupDrafter(), lambda ref: SuffixDrafter(),
                                  lambda ref: ScriptedDrafter("random", seed=3),
                                  lambda ref: ScriptedDrafter("right", ref, overshoot=5)])
def test_replay_makes_the_same_drafter_calls_as_the_engine(tiny_engine, make):
    ids = _ids(tiny_engine, PROMPTS[1])
    ref = tiny_engine.generate(ids, method="ar", max_new_tokens=N).token_ids
    in_engine, in_replay = Recorder(make(ref)), Recorder(make(ref))
    tiny_engine.generate(ids, max_new_tokens=N, drafter=in_engine)
    replay(in_replay, ids, ref, limit=N)
    assert in_replay.log == in_engine.log
    assert in_engine.log[0] == ("begin", tuple(ids)) and in_engine.log[1] == ("observe", (ref[0],))
    assert in_engine.log[-1] == ("end", tuple(ref))


def test_replay_mirrors_a_generation_that_ends_at_eos(tiny_engine):
    ids = _ids(tiny_engine, PROMPTS[2])
    free = tiny_engine.generate(ids, method="ar", max_new_tokens=N).token_ids
    engine = Engine(tiny_engine.target, tiny_engine.tokenizer)
    engine.eos_ids = frozenset({free[20]})  # a token the model emits mid-way: the output ends there
    ref = engine.generate(ids, method="ar", max_new_tokens=N).token_ids
    assert len(ref) < N and ref[-1] == free[20]
    for drafter in (lambda: ScriptedDrafter("right", free, overshoot=4), PromptLookupDrafter):
        real, rec = Recorder(drafter()), Recorder(drafter())
        res = engine.generate(ids, max_new_tokens=N, drafter=real)
        records = replay(rec, ids, ref, limit=N)
        assert rec.log == real.log
        assert len(records) == res.stats.n_steps and tau(records) == res.stats.mean_accepted_length


def test_oracle_replay_accepts_everything_up_to_its_depth(tiny_engine):
    ids = _ids(tiny_engine, PROMPTS[0])
    ref = tiny_engine.generate(ids, method="ar", max_new_tokens=N).token_ids
    records = replay(OracleDrafter(ref, max_draft=8), ids, ref, limit=N)
    assert all(r.accepted == r.draft_len for r in records)
    assert [r.committed for r in records] == [9] * 6 + [5]  # 59 tokens after the first
    assert tau(records) == pytest.approx(59 / 7)


def test_ar_and_one_token_references(tiny_engine):
    ids = _ids(tiny_engine, PROMPTS[3])
    ref = tiny_engine.generate(ids, method="ar", max_new_tokens=5).token_ids
    records = replay(None, ids, ref)
    assert [(r.position, r.draft_len, r.accepted, r.committed) for r in records] == [(i, 0, 0, 1) for i in range(1, 5)]
    assert tau(records) == 1.0
    rec = Recorder(PromptLookupDrafter())
    assert replay(rec, ids, ref[:1]) == [] and rec.log == [("end", (ref[0],))]  # as the engine: no begin
    with pytest.raises(ValueError, match="empty"):
        replay(None, ids, [])
    with pytest.raises(ValueError, match="below the reference length"):
        replay(None, ids, ref, limit=2)


def test_records_carry_features_positions_and_budgets(tiny_engine):
    ids = _ids(tiny_engine, PROMPTS[1])
    ref = tiny_engine.generate(ids, method="ar", max_new_tokens=N).token_ids
    records = replay(PromptLookupDrafter(), ids, ref, limit=N, max_draft=3)
    pos = 1
    for r in records:
        assert r.position == pos and r.prompt_len == len(ids)
        assert r.budget == min(3, N - pos - 1) and r.draft_len <= r.budget and r.draft_depth == r.draft_len
        if r.budget > 0:  # at budget 0 the engine does not ask the drafter: an empty draft
            assert r.features.draft_length == r.draft_len and r.features.score == 0.0  # pld measures no score
        assert 0 <= r.accepted <= r.draft_len and r.committed == r.accepted + 1 and r.draft_seconds >= 0
        pos += r.committed
    assert pos == len(ref)
    assert StepRecord.from_dict(records[0].to_dict()) == records[0]
