"""The hybrid drafter on the tiny model: exact under every rule, lossless sampling, and trace
labels equal to what the engine really accepts."""
import numpy as np
import pytest
import torch

from hvd.offline.references import ReferenceStore
from hvd.hybrid.drafter import HybridDrafter
from hvd.drafters.pld import PromptLookupDrafter
from hvd.drafters.suffix import SuffixDrafter
from hvd.hybrid import predictor as P
from hvd.cost.curve import VerifyCost
from hvd.hybrid.features import FEATURES
from hvd.hybrid.policy import PolicyConfig
from hvd.hybrid.trace import trace_prompt

from conftest import VOCAB, ScriptedDrafter
from stats_util import two_sample

PROMPTS = [[3, 8, 1, 22, 9, 14, 3, 8, 1, 22], [40, 41, 42, 40, 41, 42, 40, 41], list(range(1, 30))]
N = 48
CLASSES = np.ones((VOCAB, 5), np.uint8)
FLAT = VerifyCost((0, 64), (0.01, 0.011))  # verification nearly free: `cost` also merges both arms
STEEP = VerifyCost((0, 8, 64), (0.01, 0.02, 0.2))


def fake_predictor(bias: float) -> P.Predictor:
    """Predicts `bias` + the draft length (weights by hand: no training in this test): two
    one-unit ReLU layers pass the (non-negative) draft length through, the output adds `bias`."""
    f = len(FEATURES)
    w0 = np.zeros((f, 1), np.float32)
    w0[FEATURES.index("draft_length"), 0] = 1.0
    one, zero = np.ones((1, 1), np.float32), np.zeros(1, np.float32)
    layers = [(w0, zero), (one, zero), (one, np.array([bias], np.float32))]
    return P.Predictor(layers, np.zeros(f, np.float32), np.ones(f, np.float32), CLASSES, {})


def hybrids(ref=(), seed=0):
    """One hybrid per rule, with an adversarial model arm (random trees) or a copying one."""
    model_arms = [lambda: ScriptedDrafter("random", seed=seed, size=6), lambda: PromptLookupDrafter()]
    rules = [(PolicyConfig(rule="rule", score_threshold=1.0), None, None),
             (PolicyConfig(rule="threshold", threshold=2.0), fake_predictor(-1.0), None),
             (PolicyConfig(rule="cost", allow_both=True), fake_predictor(0.5), FLAT),  # the union arm, exact too
             (PolicyConfig(rule="cost"), fake_predictor(0.5), STEEP)]
    for arm in model_arms:
        for policy, pred, cost in rules:
            yield HybridDrafter("hvd", SuffixDrafter(), arm(), policy, pred, cost, CLASSES)


@pytest.mark.parametrize("prompt", PROMPTS)
def test_every_rule_is_exact(tiny_engine, prompt):
    ref = tiny_engine.generate(prompt, method="ar", max_new_tokens=N).token_ids
    for h in hybrids():
        res = tiny_engine.generate(prompt, max_new_tokens=N, drafter=h)
        assert res.token_ids == ref, (h.policy, type(h.model).__name__)
        arms = {s.drafter for s in res.stats.steps}
        assert arms <= {"suffix", h.model.name, f"suffix+{h.model.name}", h.name, "ar"}  # h.name: no budget left; ar: no arm pays


def test_both_arms_get_used(tiny_engine):
    prompt = PROMPTS[1]
    seen = set()
    for h in hybrids():
        seen |= {s.drafter for s in tiny_engine.generate(prompt, max_new_tokens=N, drafter=h).stats.steps}
    assert {"suffix", "pld", "random"} <= seen and any("+" in s for s in seen)


@pytest.mark.slow
def test_sampling_matches_ar_distribution(tiny_engine):
    prompt, n, seeds = [40, 41, 42, 40, 41, 42, 40, 41], 4, 1200
    kw = dict(max_new_tokens=n, temperature=0.9, top_k=20)

    def marginals(make=None):
        counts = torch.zeros(n, VOCAB)
        for s in range(seeds):
            extra = {"method": "ar"} if make is None else {"drafter": make()}
            for i, t in enumerate(tiny_engine.generate(prompt, seed=s, **kw, **extra).token_ids):
                counts[i, t] += 1
        return counts

    ar = marginals()
    make = lambda: HybridDrafter("hvd", SuffixDrafter(), ScriptedDrafter("random", seed=3, size=6),
                                 PolicyConfig(rule="cost"), fake_predictor(0.5), FLAT, CLASSES)
    spec = marginals(make)
    for i in range(n):
        assert two_sample(ar[i], spec[i]) > 1e-3, i


class _Prompt:
    def __init__(self, ids):
        self.id, self.dataset = "p", "test"
        self.messages = ({"role": "user", "content": "".join("abcdefghij"[t % 10] for t in ids)},)


def test_trace_labels_are_what_the_engine_accepts(tiny_engine, tmp_path):
    """Replaying the hybrid over `ar`'s output labels each cache draft with the accepted length
    the real engine gets whenever it verifies that draft alone."""
    store = ReferenceStore(tmp_path / "refs.jsonl")
    prompt = _Prompt([1, 2, 3, 1, 2, 3, 1, 2, 3, 4])

    def make():
        return HybridDrafter("hvd", SuffixDrafter(), PromptLookupDrafter(), PolicyConfig(rule="rule", score_threshold=1.0),
                             None, None, CLASSES)

    xs, ys = trace_prompt(tiny_engine, make(), prompt, N, store)
    assert len(xs) == len(ys) > 0 and all(x.shape == (len(FEATURES),) for x in xs)
    real = make()
    real.log = []
    res = tiny_engine.generate(list(prompt.messages), max_new_tokens=N, drafter=real)
    cache_steps = [s.accepted for s in res.stats.steps if s.drafter == "suffix"]
    logged = [cdraft.matched(res.token_ids[pos:]) for pos, _, cdraft in real.log]
    assert logged == ys  # same decisions, same labels, in replay and in the real run
    chosen = [y for y, (pos, x, c) in zip(ys, real.log) if x[FEATURES.index("score")] >= 1.0]
    assert chosen == cache_steps
