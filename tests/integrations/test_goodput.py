"""The budget cap of hvd's vLLM core under load (hvd/integrations/goodput.py): a draft token
goes on only while the request's measured acceptance beats the share of a plain step a row costs."""
import math

import pytest

from hvd.cost.batch import StepLine

from hvd.integrations.goodput import ArmRecord, RowRecord, cap, price


@pytest.mark.parametrize("rates,theta,budget,want", [
    (None, 0.5, 16, 16),  # no evidence yet: the arms decide
    ((0.9, 0.9), 0.0, 16, 16),  # rows cost nothing: no cap
    ((0.5, 0.5), 0.34, 16, 1),  # 0.5 > 0.34 > 0.25
    ((0.5, 0.5), 0.25, 16, 1),  # 0.5^2 is not above 0.25
    ((0.3, 0.9), 0.34, 16, 0),  # the first token does not pay, whatever follows
    ((0.99, 0.99), 0.8, 16, 16),  # copying
    ((0.9, 0.9), 0.16, 8, 8),  # 17 would pay; the budget is 8
    ((0.6, 0.95), 0.33, 16, 12),  # a copy refused where it starts or not at all: 0.6 x 0.95^11 > 0.33
    ((0.9, 0.9), 0.33, 16, 10),  # one geometric rate as high on average: 0.9^10 > 0.33 > 0.9^11
])
def test_the_cap_is_the_longest_draft_whose_last_token_still_pays(rates, theta, budget, want):
    assert cap(rates, theta, budget) == want
    if 0 < want < budget:
        first, then = rates
        assert first * then ** (want - 1) > theta >= first * then ** want


def test_the_price_is_a_rows_share_of_a_plain_step():
    assert price(StepLine(), 8) == 0.0  # nothing fitted yet
    assert math.isclose(price(StepLine(0.036, 0.0, 0.0023), 8), 0.0184 / 0.0544)  # a CPU batch of 8: a third
    assert price(StepLine(0.030, 0.0, 0.0005), 1) < 0.02  # one request: a row costs little
    # a request dearer than its row (vLLM on long prompts): a row is a smaller share
    assert math.isclose(price(StepLine(0.020, 0.0025, 0.0025), 8), 0.02 / 0.06)


def test_acceptance_is_counted_per_arm_from_what_was_committed_and_fades_without_drafts():
    r = RowRecord()
    assert r.rates("suffix") is None
    r.drafted("suffix", [5, 6, 7, 8])
    r.saw([5, 6, 9])  # two accepted, the third refused (9 is the target's own token)
    known = r.arms["suffix"]
    assert (known.first.accepted, known.first.refused) == (1, 0) and r.draft == ()
    assert (known.then.accepted, known.then.refused) == (1, 1)  # the second accepted, the third not
    r.drafted("suffix", [1, 2])
    r.saw([1, 2, 3])  # all accepted, 3 the bonus
    assert known.then.refused == pytest.approx(0.8) and known.then.accepted == pytest.approx(1.8)
    r.drafted("aded-greedy", [4])
    r.saw([7])  # refused at once: the tri-gram arm's rate, not the copy's
    assert r.rates("aded-greedy")[0] < 0.35 < 0.75 < r.rates("suffix")[0]
    assert known.first.accepted == pytest.approx(1.8 * 0.8)  # the suffix arm did not draft: its evidence ages
    low = ArmRecord()
    low.first.add(0, 5)
    before = low.rates[0]
    for _ in range(20):
        low.fade()
    assert before < 0.1 and low.rates[0] > 0.8  # an arm that stopped paying is tried again later
    r.drafted("ar", [])  # no draft: nothing waits, every arm ages
    r.saw([1, 2])
    assert r.draft == () and r.arm is None and known.first.accepted == pytest.approx(1.8 * 0.8 ** 2)
