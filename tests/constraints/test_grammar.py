"""Grammars through llguidance (hvd/constraints/grammar.py) on the tests' character tokenizer:
what a matcher allows, forces and refuses, and drafts cut where the grammar refuses them."""
import json

import pytest

from conftest import CHARS, char_tokenizer
from hvd.constraints.grammar import GrammarError, Grammars, GrammarSpec, allowed_draft
from hvd.types import Draft

SCHEMA = {"type": "object", "properties": {"name": {"enum": ["alpha", "beta"]}, "n": {"type": "integer"}},
          "required": ["name", "n"], "additionalProperties": False}


@pytest.fixture(scope="module")
def grammars() -> Grammars:
    return Grammars(char_tokenizer(), len(CHARS) + 1, [0])


def ids(text: str) -> list[int]:
    return [CHARS.index(c) + 1 for c in text]


def test_a_json_schema_allows_forces_and_refuses(grammars):
    m = grammars.matcher(GrammarSpec.json_schema(SCHEMA))
    allowed = m.allowed()
    assert allowed[ids("{")[0]] and allowed.sum() == 1 and m.forced() == ids('{"name": "')
    m.consume(ids("{")[0])
    assert m.valid_prefix(ids('"name": "a')) == 10 and m.valid_prefix(ids('"nope')) == 2  # '"n' could start "n"
    for t in ids('"name": "'):
        m.consume(t)
    assert m.forced() == []  # alpha or beta: a choice
    assert set(i for i, ok in enumerate(m.allowed()) if ok) == set(ids("ab"))
    for t in ids('alpha", "n": 12}'):
        m.consume(t)
    assert m.stopped and list(m.allowed().nonzero()[0]) == [0]  # only the end may follow


def test_drafts_are_cut_where_the_grammar_refuses(grammars):
    m = grammars.matcher(GrammarSpec.json_schema(SCHEMA))
    for t in ids('{"name": "'):
        m.consume(t)
    chain = Draft.chain(ids('beta", "x'))
    assert allowed_draft(chain, m).tokens == tuple(ids('beta", "'))  # "x" is no key of the schema
    # a tree: 'b' -> 'e' (kept), 'b' -> 'x' (refused), 'z' (refused) -> 'a' (under a refused node)
    b, e, x, z, a = ids("bexza")
    tree = Draft((b, e, x, z, a), (-1, 0, 0, -1, 3))
    kept = allowed_draft(tree, m)
    assert kept.tokens == (b, e) and kept.parents == (-1, 0)
    assert m.valid_prefix(ids("beta")) == 4  # the matcher's state is unchanged


def test_regex_and_lark_grammars(grammars):
    m = grammars.matcher(GrammarSpec("regex", r"(yes|no)\."))
    assert set(i for i, ok in enumerate(m.allowed()) if ok) == set(ids("yn"))
    m = grammars.matcher(GrammarSpec("lark", 'start: "x" NUM\nNUM: /[0-9]+/'))
    assert m.forced() == ids("x")


@pytest.mark.parametrize("spec,fragment", [
    (GrammarSpec("lark", "start: undefined_rule"), "cannot be enforced"),
    (GrammarSpec("regex", "(unclosed"), "cannot be enforced"),
    (GrammarSpec("json_schema", "not json"), "JSON schema"),
])
def test_bad_grammars_are_input_errors_that_say_why(grammars, spec, fragment):
    with pytest.raises(GrammarError, match=fragment):
        grammars.matcher(spec)


def test_a_spec_kind_is_checked():
    with pytest.raises(GrammarError, match="unknown grammar kind"):
        GrammarSpec("yaml", "x")
    assert json.loads(GrammarSpec.json_schema(SCHEMA).source) == SCHEMA
