"""HVD parts on hand-made cases: draft union and matching, features, predictor, decision rules."""
import numpy as np
import pytest

from hvd.hybrid import predictor as P
from hvd.cost.curve import VerifyCost, best_cut
from hvd.hybrid.features import FEATURES, StepHistory, feature_vector, token_class_counts
from hvd.hybrid.policy import BOTH, CACHE, MODEL, NONE, ArmEstimate, PolicyConfig, capped_mean, choose, expected_max, geometric
from hvd.types import Draft


def test_matched_takes_the_deepest_matching_path():
    tree = Draft((1, 5, 2, 7, 9), (-1, -1, 0, 2, 1))  # 1-2-7 and 5-9
    assert tree.matched([1, 2, 7, 4]) == 3
    assert tree.matched([5, 9]) == 2
    assert tree.matched([1, 9]) == 1
    assert tree.matched([3]) == 0 and tree.matched([]) == 0
    assert Draft.chain([3, 4]).matched([3, 4, 5]) == 2


def test_union_merges_shared_prefixes_and_keeps_order():
    u = Draft.chain([1, 2, 3]).union(Draft((1, 5, 2, 7), (-1, -1, 0, 2)))
    assert u.tokens == (1, 2, 3, 5, 7) and u.parents == (-1, 0, 1, -1, 1)
    assert u.matched([1, 2, 7]) == 3 and u.matched([1, 2, 3]) == 3 and u.matched([5]) == 1


def test_token_class_counts_and_feature_vector():
    classes = token_class_counts(["a b", "(x)", "\n\n", "=", "ok."])
    assert classes[0].tolist() == [1, 0, 0, 0, 0]
    assert classes[1].tolist() == [0, 0, 0, 2, 0]
    assert classes[2].tolist() == [0, 2, 0, 0, 0]
    draft = Draft.chain([0, 1, 4], score=2.5, match_length=4.0, support=3.0)
    h = StepHistory()
    h.record(True, 5)
    h.record(False, 1)
    x = feature_vector(draft, prompt_len=100, generated=20, history=h, classes=classes)
    f = dict(zip(FEATURES, x.tolist()))
    assert len(x) == len(FEATURES)
    assert f["score"] == 2.5 and f["match_length"] == 4.0 and f["draft_length"] == 3.0
    assert f["relative_position"] == pytest.approx(20 / 120)
    assert f["cache_rate"] == 0.5 and f["cache_accepted_mean"] == 5.0
    assert [f["accepted_2"], f["accepted_3"]] == [5.0, 1.0]
    assert f["n_whitespace"] == 1 and f["n_brackets"] == 2 and f["n_punctuation"] == 1


def test_predictor_fits_saves_and_loads(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4000, len(FEATURES))).astype(np.float32)
    y = np.clip(3 * x[:, 0] + 4, 0, None).astype(np.float32)  # accepted length driven by the first feature
    classes = np.zeros((7, 5), np.uint8)
    pred = P.fit(x, y, classes, P.TrainConfig(epochs=30, batch_size=256))
    assert np.mean((pred.predict(x) - y) ** 2) < 0.1 * np.var(y)
    pred.save(tmp_path)
    again = P.load(tmp_path)
    np.testing.assert_allclose(again.predict(x[:5]), pred.predict(x[:5]), rtol=1e-5)
    assert pred.predict(x[0]).shape == ()


def test_predictor_ignores_what_training_never_varied_and_stays_in_range():
    """A feature constant in the traces (`source_global` of fresh requests) reads as its
    training value, and inputs far outside the traces are held at their edge: a draft from
    earlier responses was once predicted 700,000 accepted tokens."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2000, len(FEATURES))).astype(np.float32)
    x[:, 3] = 0.0  # never varied
    y = np.clip(2 * x[:, 0] + 3, 0, None).astype(np.float32)
    pred = P.fit(x, y, np.zeros((7, 5), np.uint8), P.TrainConfig(epochs=5, batch_size=256))
    probe = x[:8].copy()
    moved = probe.copy()
    moved[:, 3] = 1.0
    np.testing.assert_allclose(pred.predict(moved), pred.predict(probe), rtol=1e-6)
    far = probe.copy()
    far[:, 0] = 1e6
    edge = probe.copy()
    edge[:, 0] = pred.mean[0] + P.Predictor.CLIP * pred.std[0]
    np.testing.assert_allclose(pred.predict(far), pred.predict(edge), rtol=1e-5)


def test_predictor_load_errors_are_clear(tmp_path):
    with pytest.raises(P.PredictorError, match="hvd train predictor"):
        P.load(tmp_path)


def test_precision_recall():
    pred = np.array([7.0, 8.0, 1.0, 6.5, 2.0])
    y = np.array([9.0, 2.0, 7.0, 6.0, 0.0])
    p, r = P.precision_recall(pred, y, 6.0)
    assert p == pytest.approx(2 / 3) and r == pytest.approx(2 / 3)


COST = VerifyCost((0, 8, 32, 64), (0.06, 0.08, 0.15, 0.23))


def test_rules():
    arm = ArmEstimate(accepted=2.0, draft_seconds=0.005, draft_len=16)
    paper = PolicyConfig(rule="threshold", threshold=6)
    assert choose(paper, 7.0, 0.0, geometric(7.0, 10), 0.0, arm, None).arm == CACHE
    assert choose(paper, 5.0, 9.0, geometric(5.0, 10), 0.0, arm, None).arm == MODEL
    assert choose(paper, 9.0, 9.0, geometric(9.0, 0), 0.0, arm, None).arm == MODEL  # no cache draft: nothing to verify
    rule = PolicyConfig(rule="rule", score_threshold=3)
    assert choose(rule, 0.0, 3.5, geometric(0.0, 10), 0.0, arm, None).arm == CACHE
    assert choose(rule, 9.0, 1.0, geometric(9.0, 10), 0.0, arm, None).arm == MODEL
    with pytest.raises(ValueError, match="unknown hybrid rule"):
        PolicyConfig(rule="nope")


def test_cost_rule_compares_tokens_per_second():
    arm = ArmEstimate(accepted=2.0, draft_seconds=0.005, draft_len=16)
    only = PolicyConfig(rule="cost", allow_both=False, allow_none=False)
    # predicted far past 32: the whole draft, (E[min(A,32)] + 1) / 0.15 ~ 200/s, beats the model's 3 / 0.105 = 29/s
    d = choose(only, 200.0, 0.0, geometric(200.0, 32), 0.0, arm, COST)
    assert d.arm == CACHE and d.cache_depth == 32
    assert choose(only, 0.2, 0.0, geometric(0.2, 32), 0.0, arm, COST).arm == MODEL
    weak = ArmEstimate(accepted=0.0, draft_seconds=0.005, draft_len=16)
    assert choose(PolicyConfig(rule="cost"), 0.0, 0.0, geometric(0.0, 32), 0.0, weak, COST).arm == NONE  # neither pays: plain step
    flat = VerifyCost((0, 64), (0.06, 0.061))  # verification nearly free at any size: merge both
    assert choose(PolicyConfig(rule="cost", allow_both=True), 3.0, 0.0, geometric(3.0, 32), 0.0, ArmEstimate(3.0, 0.001, 16), flat).arm == BOTH
    assert choose(PolicyConfig(rule="cost", explore_every=8), 30.0, 0.0, geometric(30.0, 32), 0.0, weak, COST, since_model=8).arm == MODEL


def test_best_cut_cuts_a_draft_to_what_pays():
    assert capped_mean(3.0, 1) == pytest.approx(0.75) and capped_mean(3.0, 1000) == pytest.approx(3.0)
    assert best_cut(geometric(200.0, 32), COST, start=1) == 32  # all of it expected: verify it all
    short = best_cut(geometric(1.0, 32), COST, start=1)
    assert 1 <= short <= 4  # one expected token: a few nodes, not 32
    rates = [(capped_mean(1.0, k) + 1) / COST(k) for k in range(1, 33)]
    assert rates[short - 1] == max(rates)
    assert geometric(3.0, 1000).sum() == pytest.approx(capped_mean(3.0, 1000))
    # a draft likely rejected at its first token but sure after it (as real ones are): all or nothing
    sticky = np.array([0.3] + [0.3] * 31)
    assert best_cut(sticky, COST, start=1) == 32


def test_expected_max_of_geometric_lengths():
    assert expected_max(3.0, 0.0) == pytest.approx(3.0)
    rng = np.random.default_rng(0)
    a = rng.geometric(1 / 4, 200_000) - 1  # mean 3
    b = rng.geometric(1 / 2, 200_000) - 1  # mean 1
    assert expected_max(3.0, 1.0) == pytest.approx(np.maximum(a, b).mean(), rel=0.02)


def test_a_model_draft_made_before_deciding_is_cut_and_priced_by_its_curve():
    arm = ArmEstimate(accepted=0.0, draft_seconds=0.5, draft_len=64)  # its running means: never read here
    cfg = PolicyConfig(rule="cost", allow_both=False)
    sure = np.array([0.95] * 3 + [0.02] * 13)  # three tokens near certain, then nothing
    d = choose(cfg, 0.0, 0.0, geometric(0.0, 0), 0.0, arm, COST, model_survival=sure)
    assert d.arm == MODEL and d.model_depth == 3
    assert choose(cfg, 0.0, 0.0, geometric(0.0, 0), 0.0, arm, COST, model_survival=np.array([0.01] * 8)).arm == NONE
    assert choose(cfg, 0.0, 0.0, geometric(0.0, 0), 0.0, arm, COST, model_survival=np.zeros(0)).arm == NONE
