"""Shared fixtures: a tiny random Llama and a character tokenizer, built from configs (no download)."""
from __future__ import annotations

import random
import string
from typing import Sequence

import pytest
import torch

from hvd.drafters.base import Capabilities, DecodeContext
from hvd.engine import Engine
from hvd.targets.hf import HFTarget
from hvd.types import Draft

CHARS = string.ascii_lowercase + string.digits + " .,:;()[]{}\n_=+-*/<>!?'\"#"


def char_tokenizer():
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<eos>": 0, **{c: i + 1 for i, c in enumerate(CHARS)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<eos>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>")


VOCAB = len(CHARS) + 1


def tiny_llama(seed: int = 0, sharpness: float = 1.0, **config):
    """A random 2-layer Llama; `config` overrides its LlamaConfig fields (e.g. head counts)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(**{
        **dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
               num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
               tie_word_embeddings=False, initializer_range=0.5, eos_token_id=0, bos_token_id=0),
        **config,
    })
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(sharpness)  # > 1: peakier next-token distributions
    return model


@pytest.fixture(scope="session")
def tiny_engine() -> Engine:
    engine = Engine(HFTarget(tiny_llama()), char_tokenizer())
    engine.eos_ids = frozenset()  # random weights emit <eos> early; EOS tests set their own
    return engine


@pytest.fixture(scope="session")
def tiny_lean_engine() -> Engine:
    """The tiny Llama through the lean target in bfloat16 (hvd/targets/lean.py)."""
    from hvd.targets.lean import LlamaTarget

    engine = Engine(LlamaTarget(tiny_llama().to(torch.bfloat16)), char_tokenizer())
    engine.eos_ids = frozenset()
    return engine


@pytest.fixture(scope="session")
def tiny_exact_engine() -> Engine:
    """The tiny Llama through the exact int8 target (hvd/targets/exact.py)."""
    from hvd.targets.exact import ExactLlamaTarget

    engine = Engine(ExactLlamaTarget(tiny_llama()), char_tokenizer())
    engine.eos_ids = frozenset()
    return engine


@pytest.fixture(scope="module")
def exact():
    """The tiny Llama (seed 3) through the exact int8 target, one per test module."""
    from hvd.targets.exact import ExactLlamaTarget

    return ExactLlamaTarget(tiny_llama(seed=3))


def random_ids(n: int, seed: int = 0) -> list[int]:
    """n token ids drawn from the tiny vocabulary (0, the <eos>, excluded)."""
    rng = random.Random(seed)
    return [rng.randrange(1, VOCAB) for _ in range(n)]


ENGINES = {"hf-fp32": "tiny_engine", "lean-bf16": "tiny_lean_engine", "exact-int8": "tiny_exact_engine"}


@pytest.fixture(params=list(ENGINES))
def any_engine(request) -> Engine:
    """Each target implementation in turn: exactness must hold in all."""
    return request.getfixturevalue(ENGINES[request.param])


def paths_of(draft: Draft) -> list[list[int]]:
    """Tokens from the root's child down to each node (row i + 1 of a verify)."""
    out: list[list[int]] = []
    for tok, p in zip(draft.tokens, draft.parents):
        out.append((out[p] if p >= 0 else []) + [tok])
    return out


def decode_one_by_one(target, prompt: list[int], tokens: list[int]) -> torch.Tensor:
    """Logits (len(tokens), vocab) of plain decoding: one token per forward."""
    target.prefill(prompt)
    rows = []
    for t in tokens:
        rows.append(target.verify(t, Draft.empty())[0])
        target.commit([])
    return torch.stack(rows)


class ScriptedDrafter:
    """Adversarial drafters for tests, chosen by `mode`:

    random   random trees of random tokens
    wrong    chains of tokens that differ from the reference continuation
    right    the reference continuation, ignoring the remaining budget (`overshoot` extra)
    """

    capabilities = Capabilities()

    def __init__(self, mode: str, reference: Sequence[int] = (), seed: int = 0, size: int = 8, overshoot: int = 0):
        self.name, self.mode, self.reference = mode, mode, list(reference)
        self.rng, self.size, self.overshoot = random.Random(seed), size, overshoot

    def for_request(self) -> "ScriptedDrafter":
        return self  # a test double: one instance per request, made by the test

    def begin(self, prompt: Sequence[int]) -> None:
        pass

    def propose(self, ctx: DecodeContext) -> Draft:
        done = len(ctx.tokens) - ctx.prompt_len
        if self.mode == "random":
            n = self.rng.randint(0, self.size)
            parents = [self.rng.randint(-1, i - 1) for i in range(n)]
            return Draft(tuple(self.rng.randrange(VOCAB) for _ in range(n)), tuple(parents))
        truth = self.reference[done : done + ctx.max_draft + self.overshoot]
        if self.mode == "wrong":
            return Draft.chain([(t + 1 + self.rng.randrange(VOCAB - 1)) % VOCAB for t in truth])
        return Draft.chain(truth)

    def observe(self, committed: Sequence[int]) -> None:
        pass

    def end(self, output: Sequence[int]) -> None:
        pass


class Recorder:
    """Wraps a drafter and logs every call the decode loop makes, and every draft proposed."""

    def __init__(self, inner) -> None:
        self.inner, self.name, self.capabilities = inner, inner.name, inner.capabilities
        self.log: list[tuple] = []
        self.drafts: list[Draft] = []

    def for_request(self) -> "Recorder":
        return self  # a test double: one instance per request, made by the test

    def begin(self, prompt: Sequence[int]) -> None:
        self.log.append(("begin", tuple(prompt)))
        self.inner.begin(prompt)

    def propose(self, ctx: DecodeContext) -> Draft:
        self.log.append(("propose", tuple(ctx.tokens), ctx.prompt_len, ctx.max_draft))
        self.drafts.append(self.inner.propose(ctx))
        return self.drafts[-1]

    def observe(self, committed: Sequence[int]) -> None:
        self.log.append(("observe", tuple(committed)))
        self.inner.observe(committed)

    def end(self, output: Sequence[int]) -> None:
        self.log.append(("end", tuple(output)))
        self.inner.end(output)
