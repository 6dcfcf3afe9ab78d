"""Grammar-constrained decoding: which tokens may come next (llguidance).

A `GrammarSpec` is what a request asks for (a JSON schema, a Lark grammar, a regex); `Grammars`
compiles it for one tokenizer (the llguidance tokenizer is built once, ~1 s, and checked
grammars are kept), and each request takes its own `Matcher`: the grammar's state after the
request's output so far. Decoding under a grammar is plain decoding over the allowed tokens:
greedy takes the best allowed token, sampling draws from the distribution renormalised over
them (hvd/verify.py `accept_constrained`), so "lossless" means identical to constrained `ar`.

A grammar that cannot be compiled, or uses a feature the engine does not support, is a
`GrammarError` naming it (the server's 400).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Sequence

import numpy as np

from hvd.errors import InputError

KINDS = ("json_schema", "lark", "regex")
# Compact JSON with one space after ':' and ',' — what models write and what drafts from
# earlier answers match; fixed, so the grammar (not the model) decides the whitespace.
JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


class GrammarError(InputError):
    """A grammar that cannot constrain decoding (its message names why)."""


@dataclass(frozen=True)
class GrammarSpec:
    kind: str  # one of KINDS
    source: str  # a JSON schema (as JSON text), a Lark grammar, or a regex

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise GrammarError(f"unknown grammar kind {self.kind!r}; choose from: {', '.join(KINDS)}")

    @classmethod
    def json_schema(cls, schema: Any) -> "GrammarSpec":
        return cls("json_schema", schema if isinstance(schema, str) else json.dumps(schema))  # key order kept: it is the output's


def llguidance_grammar(spec: GrammarSpec) -> str:
    """The llguidance grammar text of `spec` (not yet checked)."""
    from llguidance import LLMatcher

    if spec.kind == "json_schema":
        try:
            return LLMatcher.grammar_from_json_schema(spec.source, defaults=JSON_OPTIONS)
        except ValueError as e:
            raise GrammarError(f"not a JSON schema: {e}") from None
    if spec.kind == "lark":
        return LLMatcher.grammar_from_lark(spec.source)
    return LLMatcher.grammar_from_regex(spec.source)


class Matcher:
    """One request's grammar state (`hvd.verify.Constraint`)."""

    def __init__(self, matcher, vocab_size: int) -> None:
        self._m, self.vocab_size = matcher, vocab_size
        self._bits = np.zeros((vocab_size + 31) // 32, dtype=np.int32)

    def allowed(self) -> np.ndarray:
        """(vocab,) bool: the tokens that may come next (EOS where the grammar may end)."""
        self._m.unsafe_compute_mask_ptr(self._bits.ctypes.data, self._bits.nbytes)
        return np.unpackbits(self._bits.view(np.uint8), bitorder="little")[: self.vocab_size].astype(bool)

    def consume(self, token: int) -> None:
        if not self._m.consume_token(int(token)):
            raise AssertionError(f"the grammar refused token {token}: {self._m.get_error()}")

    def valid_prefix(self, tokens: Sequence[int]) -> int:
        """How many of `tokens`, in order, the grammar allows from here (state unchanged)."""
        return self._m.validate_tokens([int(t) for t in tokens]) if len(tokens) else 0

    def forced(self, limit: int = 1 << 30) -> list[int]:
        """The tokens the grammar allows alone from here, one after another, at most `limit`
        (none: a choice). llguidance's fast-forward tokens are the candidates; each is kept only
        while it is the one token the mask allows (forced text may tokenize more than one way,
        and then the model chooses)."""
        out: list[int] = []
        try:
            for token in self._m.compute_ff_tokens()[:limit]:
                allowed = self.allowed()
                if not allowed[token] or allowed.sum() != 1:
                    break
                self.consume(token)
                out.append(int(token))
        finally:
            self.rollback(len(out))
        return out

    def rollback(self, n: int) -> None:
        if n:
            self._m.rollback(n)

    @property
    def stopped(self) -> bool:
        """Nothing but the end of the text may come (the grammar is complete)."""
        return bool(self._m.is_stopped())


class Grammars:
    """Grammars compiled for one tokenizer; a `Matcher` per request."""

    def __init__(self, hf_tokenizer, vocab_size: int, eos_ids: Sequence[int] = ()) -> None:
        """`eos_ids`: the tokens that end a generation (allowed where the grammar may end)."""
        self.hf_tokenizer, self.vocab_size = hf_tokenizer, int(vocab_size)
        self.eos_ids = [int(t) for t in eos_ids]
        self._tokenizer = None

    @property
    def tokenizer(self):
        """The llguidance tokenizer (built on first use, ~1 s): read from the Hugging Face fast
        tokenizer, or, where llguidance cannot read one (its decoder), given as each token's bytes."""
        if self._tokenizer is None:
            from llguidance import LLTokenizer
            from llguidance.hf import from_tokenizer

            eos = self.eos_ids or None
            try:
                self._tokenizer = from_tokenizer(self.hf_tokenizer, n_vocab=self.vocab_size, eos_token=eos)
            except ValueError:
                from llguidance._tokenizer import TokenizerWrapper

                self._tokenizer = LLTokenizer(TokenizerWrapper(_TokenBytes(self.hf_tokenizer, self.vocab_size)),
                                              n_vocab=self.vocab_size, eos_token=eos)
        return self._tokenizer

    def check(self, spec: GrammarSpec) -> str:
        """`spec`'s llguidance grammar, checked against this tokenizer (GrammarError if it
        cannot be used)."""
        return _checked(self, spec)

    def matcher(self, spec: GrammarSpec) -> Matcher:
        from llguidance import LLMatcher

        m = LLMatcher(self.tokenizer, self.check(spec), log_level=0)
        if m.is_error():
            raise GrammarError(f"the grammar cannot be used: {m.get_error()}")
        return Matcher(m, self.vocab_size)


class _TokenBytes:
    """A tokenizer as llguidance's generic wrapper reads it: each token's bytes, its special
    tokens, and encoding."""

    def __init__(self, hf_tokenizer, vocab_size: int) -> None:
        self._hf = hf_tokenizer
        self.eos_token_id = hf_tokenizer.eos_token_id
        self.bos_token_id = getattr(hf_tokenizer, "bos_token_id", None)
        self.special_token_ids = list(getattr(hf_tokenizer, "all_special_ids", []))
        self.tokens = [hf_tokenizer.decode([i]).encode("utf-8") for i in range(vocab_size)]

    def __call__(self, text: str) -> list[int]:
        return self._hf.encode(text, add_special_tokens=False)


@lru_cache(maxsize=256)
def _checked(grammars: Grammars, spec: GrammarSpec) -> str:
    from llguidance import LLMatcher

    text = llguidance_grammar(spec)
    error, messages = LLMatcher.validate_grammar_with_warnings(text, grammars.tokenizer)
    if error:
        raise GrammarError(f"the {spec.kind.replace('_', ' ')} cannot be enforced: {messages[0]}")
    return text


def allowed_draft(draft, matcher: Matcher):
    """`draft` cut to the nodes whose whole path from the root the grammar allows (a node the
    grammar refuses goes, and everything under it): no verify row is spent on a token that
    cannot be committed. The matcher's state is unchanged."""
    if not len(draft):
        return draft
    if draft.is_chain:
        return draft.head(matcher.valid_prefix(draft.tokens))
    paths: dict[int, tuple[int, ...]] = {-1: ()}
    keep = []
    for i, (token, parent) in enumerate(zip(draft.tokens, draft.parents)):
        if parent not in paths:
            continue  # under a refused node
        path = paths[parent] + (token,)
        if matcher.valid_prefix(path) == len(path):
            paths[i] = path
            keep.append(i)
    return draft.keep(keep)
