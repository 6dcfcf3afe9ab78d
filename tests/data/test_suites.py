"""Prompt suites: real data loads fast, ids are unique, the eval/train split is fixed and disjoint,
and `load_suite` checks its arguments and returns fresh copies."""
from __future__ import annotations

import time

import pytest

from hvd.data import suites as S
from hvd.data.prompts import Prompt, estimate_tokens, split_of
from hvd.data.suites import load_suite

from prompts_util import both_splits, clear_data_caches, mixed_real_prompts

MIN_EVAL = {"agentic-edit": 100, "agentic-tools": 500, "structured": 500, "extraction": 40, "code": 100, "chat": 150,
            "long-context": 50}


def _split_key(p: Prompt) -> str:
    suite, rest = p.id.split(":", 1)
    if suite in ("agentic-edit", "long-context"):
        return "stdlib:" + rest.rsplit(":", 1)[0]
    if suite == "extraction":
        return "stdlib:" + rest
    if suite == "agentic-tools":
        return "bfcl-multi-turn:" + rest.split(":")[0].rsplit("_", 1)[1]
    return p.id


@pytest.mark.parametrize("name", S.SUITES)
def test_suite_loads_real_prompts_fast(name):
    clear_data_caches()
    start = time.perf_counter()
    prompts = load_suite(name)
    assert time.perf_counter() - start < 5  # ~1 s or less on a laptop; generous for busy CI machines
    assert len(prompts) >= MIN_EVAL[name]
    for p in prompts:
        assert isinstance(p, Prompt) and p.dataset and p.max_new_tokens == S.DEFAULT_MAX_NEW_TOKENS[name]
        assert isinstance(p.messages, tuple) and p.messages
        assert all(isinstance(m["role"], str) and isinstance(m["content"], str) and m["content"].strip() for m in p.messages)
        assert p.messages[-1]["role"] == "user"
        assert p.id.startswith(name + ":")
    assert len({p.id for p in both_splits(name)}) == len(both_splits(name))


@pytest.mark.parametrize("name", S.SUITES)
def test_split_is_disjoint_deterministic_and_follows_the_documented_rule(name):
    ev, tr = load_suite(name, "eval"), load_suite(name, "train")
    assert tr and not {p.id for p in ev} & {p.id for p in tr}
    assert 0.1 < len(tr) / (len(ev) + len(tr)) < 0.35
    assert all(split_of(_split_key(p)) == "eval" for p in ev)
    assert all(split_of(_split_key(p)) == "train" for p in tr)
    clear_data_caches()
    again = load_suite(name, "eval")
    assert [(p.id, p.messages) for p in again] == [(p.id, p.messages) for p in ev]


def test_a_stdlib_file_is_on_the_same_side_in_every_suite():
    def files(name, split):
        return {_split_key(p) for p in load_suite(name, split)}

    assert not files("agentic-edit", "train") & files("long-context", "eval")
    assert not files("long-context", "train") & files("agentic-edit", "eval")


def test_code_chat_and_long_context_contents():
    assert all(p.messages[0]["content"].startswith("Complete the following Python function:") for p in both_splits("code"))
    assert {p.dataset for p in load_suite("chat")} == {"mt-bench", "sharegpt"}
    for p in both_splits("long-context"):
        assert estimate_tokens(p.messages[0]["content"]) < 3000


def test_limit_override_and_returned_copies():
    ps = load_suite("code", limit=3, max_new_tokens=17)
    assert len(ps) == 3 and all(p.max_new_tokens == 17 for p in ps)
    assert load_suite("code", limit=0) == []
    ps[0].messages[0]["content"] = "changed"
    assert load_suite("code", limit=1)[0].messages[0]["content"] != "changed"
    chat = ps[1].chat()
    assert isinstance(chat, list) and chat == list(ps[1].messages) and chat[0] is not ps[1].messages[0]


def test_unknown_suite_and_split_are_rejected():
    with pytest.raises(ValueError) as e:
        load_suite("nope")
    assert all(name in str(e.value) for name in S.SUITES)
    with pytest.raises(ValueError, match="split"):
        load_suite("code", split="test")
    with pytest.raises(ValueError, match="max_new_tokens"):
        load_suite("code", max_new_tokens=0)


def test_mixed_real_prompts_cover_five_kinds_of_eval_prompts():
    mixed = mixed_real_prompts(4)
    assert len(mixed) == 20 and len({p.id for p in mixed}) == 20
    assert {p.id.split(":")[0] for p in mixed} == set(S.MIXED_SUITES)
    eval_ids = {p.id for name in S.MIXED_SUITES for p in load_suite(name)}
    assert all(p.id in eval_ids for p in mixed)
    assert all(any(m["role"] == "tool" for m in p.messages) for p in mixed if p.id.startswith("agentic-tools"))
