"""The budget cap of hvd's vLLM core under load (hvd/integrations/goodput.py): a draft token
goes on only while the request's measured acceptance beats the share of a plain step a row costs."""
import math

import pytest

from hvd.integrations.goodput import ArmRecord, RowRecord, cap, price


@pytest.mark.parametrize("alpha,theta,budget,want", [
    (None, 0.5, 16, 16),  # no evidence yet: the arms decide
    (0.9, 0.0, 16, 16),  # rows cost nothing: no cap
    (0.5, 0.34, 16, 1),  # 0.5 > 0.34 > 0.25
    (0.5, 0.25, 16, 1),  # 0.5^2 is not above 0.25
    (0.3, 0.34, 16, 0),
    (0.99, 0.8, 16, 16),  # copying
    (0.9, 0.16, 8, 8),  # 17 would pay; the budget is 8
])
def test_the_cap_is_the_longest_draft_whose_last_token_still_pays(alpha, theta, budget, want):
    assert cap(alpha, theta, budget) == want
    if 0 < want < budget:
        assert alpha ** want > theta >= alpha ** (want + 1)


def test_the_price_is_a_rows_share_of_a_plain_step():
    assert price(0.0, 0.0, 8) == 0.0  # nothing fitted yet
    assert math.isclose(price(0.036, 0.0023, 8), 0.0184 / 0.0544)  # a CPU batch of 8: a third
    assert price(0.030, 0.0005, 1) < 0.02  # one request: a row costs little


def test_acceptance_is_counted_per_arm_from_what_was_committed_and_fades_without_drafts():
    r = RowRecord()
    assert r.alpha("suffix") is None
    r.drafted("suffix", [5, 6, 7, 8])
    r.saw([5, 6, 9])  # two accepted, the third refused (9 is the target's own token)
    known = r.arms["suffix"]
    assert known.accepted == 2 and known.rejected == 1 and r.draft == ()
    r.drafted("suffix", [1, 2])
    r.saw([1, 2, 3])  # all accepted, 3 the bonus
    assert known.rejected == pytest.approx(0.8) and known.accepted == pytest.approx(3.6)
    r.drafted("aded-greedy", [4])
    r.saw([7])  # refused: the tri-gram arm's rate, not the copy's
    assert r.alpha("aded-greedy") < 0.3 < 0.75 < r.alpha("suffix")
    assert known.accepted == pytest.approx(3.6 * 0.8)  # the suffix arm did not draft: its evidence ages
    low = ArmRecord(accepted=0.0, rejected=5.0)
    before = low.alpha
    for _ in range(20):
        low.fade()
    assert before < 0.1 and low.alpha > 0.4  # an arm that stopped paying is tried again later
    r.drafted("ar", [])  # no draft: nothing waits, every arm ages
    r.saw([1, 2])
    assert r.draft == () and r.arm is None and known.accepted == pytest.approx(3.6 * 0.8 ** 2)
