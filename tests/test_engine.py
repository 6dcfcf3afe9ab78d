"""Greedy output of every method and adversarial drafter is token-identical to `ar`."""
import pytest

from hvd import methods
from hvd.errors import MethodUnavailable
from hvd.engine import Engine
from hvd.errors import InputError

from conftest import ScriptedDrafter

PROMPTS = [[3, 8, 1, 22, 9, 14], [40, 41, 42, 40, 41, 42, 40, 41], list(range(1, 30))]
N = 48


def ar_ids(engine: Engine, prompt, **kw):
    return engine.generate(prompt, method="ar", max_new_tokens=kw.pop("max_new_tokens", N), **kw).token_ids


@pytest.mark.parametrize("prompt", PROMPTS)
@pytest.mark.parametrize("method", [m for m in methods.METHODS if m != "ar"])
def test_registered_methods_match_ar(any_engine, prompt, method):
    try:
        any_engine.drafter(method)
    except MethodUnavailable as e:  # an untrained checkpoint, or one for another target
        pytest.skip(str(e))
    assert any_engine.generate(prompt, method=method, max_new_tokens=N).token_ids == ar_ids(any_engine, prompt)


@pytest.mark.parametrize("prompt", PROMPTS)
@pytest.mark.parametrize("mode,overshoot", [("random", 0), ("wrong", 0), ("right", 0), ("right", 7)])
def test_adversarial_drafters_match_ar(any_engine, prompt, mode, overshoot):
    ref = ar_ids(any_engine, prompt)
    drafter = ScriptedDrafter(mode, ref, seed=1, overshoot=overshoot)
    res = any_engine.generate(prompt, max_new_tokens=N, drafter=drafter)
    assert res.token_ids == ref
    assert len(res.token_ids) == N
    if mode == "right":
        assert res.stats.mean_accepted_length > 3
    if mode == "wrong":
        assert all(s.accepted == 0 for s in res.stats.steps)


def test_right_drafter_crosses_eos(tiny_engine):
    prompt = PROMPTS[0]
    full = ar_ids(tiny_engine, prompt)
    cut = next(i for i in range(5, N) if full[i] not in full[:i])  # a token new at position i
    engine = Engine(tiny_engine.target, tiny_engine.tokenizer)
    engine.eos_ids = frozenset({full[cut]})
    ref = engine.generate(prompt, method="ar", max_new_tokens=N)
    assert ref.token_ids == full[: cut + 1] and ref.stats.finish_reason == "eos"
    got = engine.generate(prompt, max_new_tokens=N, drafter=ScriptedDrafter("right", full))
    assert got.token_ids == ref.token_ids and got.stats.finish_reason == "eos"


def test_right_drafter_crosses_stop_string(tiny_engine):
    prompt = PROMPTS[1]
    full_text = tiny_engine.generate(prompt, method="ar", max_new_tokens=N).text
    stop = full_text[20:23]
    ref = tiny_engine.generate(prompt, method="ar", max_new_tokens=N, stop=[stop])
    assert ref.stats.finish_reason == "stop" and stop not in ref.text
    assert full_text.startswith(ref.text)
    for mode in ("right", "random"):
        got = tiny_engine.generate(prompt, max_new_tokens=N, stop=[stop], drafter=ScriptedDrafter(mode, ar_ids(tiny_engine, prompt)))
        assert got.token_ids == ref.token_ids and got.text == ref.text


@pytest.mark.parametrize("budget", [1, 2, 3, 5])
def test_small_budgets_end_where_ar_ends(tiny_engine, budget):
    ref = ar_ids(tiny_engine, PROMPTS[2], max_new_tokens=budget)
    got = tiny_engine.generate(PROMPTS[2], max_new_tokens=budget, drafter=ScriptedDrafter("right", ref, overshoot=9))
    assert got.token_ids == ref and len(ref) == budget


def test_stream_text_adds_up_to_the_result(tiny_engine):
    chunks = list(tiny_engine.stream(PROMPTS[1], method="pld", max_new_tokens=N, stop=["zz"]))
    result = chunks[-1].result
    assert "".join(c.text for c in chunks) == result.text
    assert sum((c.token_ids for c in chunks), []) == result.token_ids


def test_stats_are_consistent(tiny_engine):
    res = tiny_engine.generate(PROMPTS[1], method="pld", max_new_tokens=N)
    s = res.stats
    assert s.new_tokens == N == 1 + sum(st.accepted + 1 for st in s.steps)
    assert s.mean_accepted_length == pytest.approx((N - 1) / s.n_steps)
    d = res.to_dict()["stats"]
    for key in ("new_tokens", "steps", "mean_accepted_length", "tokens_per_second", "prefill_seconds", "wall_seconds"):
        assert key in d
    assert tiny_engine.generate(PROMPTS[1], method="ar", max_new_tokens=N).stats.mean_accepted_length == 1.0


@pytest.mark.parametrize(
    "kwargs,msg",
    [
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"temperature": -1.0}, "temperature"),
        ({"method": "nope"}, "unknown method"),
        ({"top_p": 0.0}, "top_p"),
    ],
)
def test_bad_arguments(tiny_engine, kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        tiny_engine.generate(PROMPTS[0], **{"method": "ar", **kwargs})


def test_prompt_longer_than_context(tiny_engine):
    with pytest.raises(InputError, match="context window"):
        tiny_engine.generate([1] * 300, method="ar")
