"""Real default model (SmolLM2-135M-Instruct) on real prompts: every method token-identical to `ar`.

Bounded for CI: HVD_REAL_TOKENS new tokens per prompt (default 24: ~7 min of the CI budget for 10 methods x 20 prompts), 4 prompts from each of
5 kinds (agentic edits of real source files, multi-turn tool calling with JSON schemas,
function calling, HumanEval, chat) = 20 prompts. Set HVD_REAL_TOKENS=256 for a longer check.
"""
import os
import subprocess
import sys

import pytest

from hvd import methods
from hvd.errors import MethodUnavailable

pytestmark = pytest.mark.slow
TOKENS = int(os.environ.get("HVD_REAL_TOKENS", "24"))
PER_KIND = int(os.environ.get("HVD_REAL_PROMPTS", "2"))


@pytest.fixture(scope="module")
def engine():
    """The default model and dtype (auto: the exact int8 target on an AVX2 CPU) with prefix
    caching: every method on a prompt reuses its prompt KV, so the check costs one prefill per
    prompt (decoding itself is what is checked)."""
    from hvd import Engine

    return Engine.load(reuse_prefix=True)


@pytest.fixture(scope="module")
def prompts():
    from prompts_util import mixed_real_prompts

    chosen = mixed_real_prompts(PER_KIND)
    assert len(chosen) >= 5 * PER_KIND and len({p.dataset for p in chosen}) >= 5
    return chosen


MUST_RUN = {"pld", "suffix", "aded", "hvd", "hvd-static", "hvd-threshold", "rule-hybrid", "layerskip"}  # on any model


def mismatching(engine, prompts, tokens: int = TOKENS) -> list[tuple[str, str]]:
    """(prompt, method) pairs whose greedy output differs from `ar`'s; every method in
    MUST_RUN must have run (the others may be unavailable: a checkpoint for another model)."""
    mismatches, ran = [], set()
    for p in prompts:
        ids = engine.encode(list(p.messages))
        ref = engine.generate(ids, method="ar", max_new_tokens=tokens).token_ids
        for method in methods.METHODS:
            if method == "ar":
                continue
            try:
                drafter = methods.get(method).make(engine.target, engine.stores.fresh())  # no earlier outputs
            except MethodUnavailable:  # dflash: its checkpoints are the default model's
                continue
            ran.add(method)
            got = engine.generate(ids, method=method, max_new_tokens=tokens, drafter=drafter).token_ids
            if got != ref:
                mismatches.append((p.id, method))
    assert MUST_RUN <= ran, MUST_RUN - ran
    return mismatches


def test_auto_takes_the_exact_fast_path(engine):
    from hvd.machine import cpu_flags
    from hvd.targets.native import ISA

    if ISA <= cpu_flags():
        assert engine.target.precision == "int8"


def test_every_method_is_token_identical_to_ar(engine, prompts):
    assert not mismatching(engine, prompts)


def test_every_method_is_token_identical_to_ar_in_float32(prompts):
    """The transformers fp32 target too (the default is the int8 one on AVX2 CPUs): the shortest
    prompt of three kinds (bounded for CI: float32 verifies are the slowest here)."""
    from hvd import Engine

    engine = Engine.load(reuse_prefix=True, dtype="float32")
    one_each = list({p.dataset: p for p in prompts}.values())
    short = sorted(one_each, key=lambda p: sum(len(m["content"]) for m in p.messages))[:3]
    assert not mismatching(engine, short)


GEMMA_TOKENS = int(os.environ.get("HVD_REAL_GEMMA_TOKENS", "16"))


@pytest.fixture(scope="module")
def gemma():
    """Gemma 3 270M (the `gemma` extra, installed by `make install`): another family (Gemma's
    norms, GELU, sliding windows, a 262k vocabulary) through the same exact target."""
    import importlib.util

    from hvd import Engine
    from hvd.targets.loader import GEMMA_PACKAGE

    if importlib.util.find_spec(GEMMA_PACKAGE) is None:
        pytest.skip("gemma3-270m is not installed (pip install -e '.[gemma]')")
    return Engine.load("gemma3-270m", reuse_prefix=True)


def test_gemma_every_method_is_token_identical_to_ar(gemma, prompts):
    """One prompt of each kind (the shortest), GEMMA_TOKENS new tokens: bounded for CI."""
    from hvd.machine import cpu_flags
    from hvd.targets.native import ISA

    if ISA <= cpu_flags():
        assert gemma.target.precision == "int8" and gemma.target.arch.family == "gemma3"
    one_each = list({p.dataset: p for p in prompts}.values())
    short = sorted(one_each, key=lambda p: sum(len(m["content"]) for m in p.messages))
    assert not mismatching(gemma, short, GEMMA_TOKENS)


def test_sampling_is_reproducible_on_real_model(engine):
    """Same seed and a drafter in the same state give the same sample (a fresh drafter each call:
    a shared one learns from the first call, drafts differently and so draws different randoms)."""
    def sample():
        drafter = methods.get("suffix").make(engine.target)
        return engine.generate("Name three colors.", method="suffix", max_new_tokens=16, temperature=0.8,
                               top_p=0.9, seed=3, drafter=drafter)

    res, again = sample(), sample()
    assert res.token_ids == again.token_ids and res.stats.new_tokens > 0


def test_cli_rejects_prompt_longer_than_context():
    long = "word " * 9000
    out = subprocess.run([sys.executable, "-m", "hvd.cli", "generate", long, "--max-new-tokens", "4"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2
    assert out.stderr.strip().startswith("hvd: error: prompt is") and "context window" in out.stderr
    assert "Traceback" not in out.stderr


def test_cli_runs_the_shipped_dflash_checkpoint():
    """The packaged drafter loads for the default model (a missing or mismatched checkpoint is
    a one-line error: tests/drafters/test_dflash.py)."""
    out = subprocess.run([sys.executable, "-m", "hvd.cli", "generate", "hi", "--method", "dflash", "--max-new-tokens", "4"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-500:]
    assert out.stdout.strip() and "Traceback" not in out.stderr