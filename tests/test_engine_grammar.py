"""Constrained decoding stays lossless: under a grammar every method is token-identical to
constrained `ar` (greedy) and draws the same text with a seed (sampling), on every target, with
grammar-aware drafting on or off, whatever the drafter proposes — tokens the grammar refuses
included; outputs match their grammar; forced tokens are counted apart."""
import json

import pytest

from conftest import CHARS, ScriptedDrafter, char_tokenizer, tiny_llama
from hvd.constraints.grammar import GrammarError, GrammarSpec
from hvd.drafters.base import Capabilities
from hvd.engine import Engine, Request
from hvd.targets.hf import HFTarget
from hvd.types import Draft

SCHEMA = {"type": "object", "properties": {"name": {"enum": ["alpha", "beta", "gamma"]}, "count": {"type": "integer"},
                                           "tags": {"type": "array", "items": {"enum": ["x", "yy"]}, "maxItems": 3}},
          "required": ["name", "count", "tags"], "additionalProperties": False}
GRAMMARS = {"json": GrammarSpec.json_schema(SCHEMA), "regex": GrammarSpec("regex", r"[a-f]{2,5}( [0-9]{1,3}){2,4}\."),
            "lark": GrammarSpec("lark", 'start: "call(" ARG ("," " " ARG)* ")"\nARG: /[a-z]{1,6}/')}
PROMPTS = [[3, 8, 1, 22, 9, 14], list(range(1, 30))]
N = 40


def ids(text: str) -> list[int]:
    return [CHARS.index(c) + 1 for c in text]


class Illegal(ScriptedDrafter):
    """Drafts the right tokens with ones the grammar refuses mixed in: '#' chains and trees."""

    def propose(self, ctx):
        right = super().propose(ctx).tokens[:4]
        bad = ids("#")[0]
        return Draft((*right, bad, bad), (*range(-1, len(right) - 1), -1, len(right) - 1 if right else -1))


def drafters(mode: str, reference):
    return Illegal("right", reference) if mode == "illegal" else ScriptedDrafter(mode, reference, seed=2, size=10)


@pytest.mark.parametrize("grammar", list(GRAMMARS))
@pytest.mark.parametrize("mode", ["random", "wrong", "right", "illegal"])
@pytest.mark.parametrize("aware", [True, False])
def test_every_drafter_matches_constrained_ar(any_engine, grammar, mode, aware):
    spec = GRAMMARS[grammar]
    for prompt in PROMPTS:
        ar = any_engine.generate(prompt, method="ar", max_new_tokens=N, grammar=spec)
        got = any_engine.generate(prompt, max_new_tokens=N, grammar=spec, grammar_drafts=aware,
                                  drafter=drafters(mode, ar.token_ids))
        assert got.token_ids == ar.token_ids


@pytest.mark.parametrize("method", ["pld", "suffix", "aded"])
def test_registered_methods_match_constrained_ar(any_engine, method):
    for grammar, spec in GRAMMARS.items():
        ar = any_engine.generate(PROMPTS[1], method="ar", max_new_tokens=N, grammar=spec)
        for aware in (True, False):
            got = any_engine.generate(PROMPTS[1], method=method, max_new_tokens=N, grammar=spec, grammar_drafts=aware)
            assert got.token_ids == ar.token_ids, (grammar, aware)


def test_seeded_sampling_under_a_grammar_draws_what_constrained_ar_draws(tiny_exact_engine):
    spec = GRAMMARS["json"]
    for seed in (1, 2, 3):
        kw = dict(max_new_tokens=N, grammar=spec, temperature=0.9, top_p=0.95, seed=seed)
        ar = tiny_exact_engine.generate(PROMPTS[0], method="ar", **kw)
        for mode in ("random", "illegal"):
            got = tiny_exact_engine.generate(PROMPTS[0], drafter=drafters(mode, ar.token_ids), **kw)
            assert got.text == ar.text


def test_many_requests_with_and_without_grammars_decode_together_as_alone(tiny_exact_engine):
    reqs = [Request(PROMPTS[i % 2], method=m, max_new_tokens=N, grammar=GRAMMARS[g] if g else None)
            for i, (m, g) in enumerate([("ar", "json"), ("suffix", "regex"), ("pld", None), ("aded", "lark"),
                                         ("suffix", "json"), ("ar", None)])]
    together = tiny_exact_engine.generate_many(reqs, max_batch=6)
    alone = [tiny_exact_engine.generate(r.prompt, method=r.method, max_new_tokens=N, grammar=r.grammar) for r in reqs]
    assert [r.token_ids for r in together] == [r.token_ids for r in alone]


@pytest.fixture(scope="module")
def eos_engine() -> Engine:
    """The tiny Llama that stops at <eos> (id 0): a grammar's end lets it finish."""
    return Engine(HFTarget(tiny_llama(seed=5)), char_tokenizer())


def test_outputs_match_their_grammar_and_forced_tokens_are_counted_apart(eos_engine):
    spec = GRAMMARS["json"]
    aware = eos_engine.generate(PROMPTS[0], method="ar", max_new_tokens=120, grammar=spec)
    plain = eos_engine.generate(PROMPTS[0], method="ar", max_new_tokens=120, grammar=spec, grammar_drafts=False)
    assert aware.token_ids == plain.token_ids and aware.stats.finish_reason == "eos"
    doc = json.loads(aware.text)
    assert set(doc) == {"name", "count", "tags"} and doc["name"] in SCHEMA["properties"]["name"]["enum"]
    assert isinstance(doc["count"], int) and set(doc["tags"]) <= {"x", "yy"}
    # keys, quotes and the fixed parts of the names are forced: committed without a choice
    assert aware.stats.forced_tokens >= len('{"name": "') + len('", "count": ')
    assert plain.stats.forced_tokens == 0 and aware.stats.n_steps < plain.stats.n_steps
    assert aware.stats.to_dict()["forced_tokens"] == aware.stats.forced_tokens


def test_a_grammar_that_cannot_be_used_is_an_input_error(tiny_exact_engine):
    with pytest.raises(GrammarError, match="cannot be enforced"):
        tiny_exact_engine.generate(PROMPTS[0], grammar=GrammarSpec("lark", "start: nope"))


def test_drafters_that_read_hidden_states_get_no_forced_chain(tiny_engine):
    class Hidden(ScriptedDrafter):
        capabilities = Capabilities(needs_hidden_states=(1,))

    spec = GRAMMARS["json"]
    ar = tiny_engine.generate(PROMPTS[0], method="ar", max_new_tokens=N, grammar=spec)
    got = tiny_engine.generate(PROMPTS[0], max_new_tokens=N, grammar=spec, drafter=Hidden("right", ar.token_ids))
    assert got.token_ids == ar.token_ids and got.stats.forced_tokens == 0
