"""A batch step's cost line, fitted from the steps, and the charge that prices a request's draft
for the batch."""
import numpy as np
import pytest

from hvd.cost.batch import BatchStepCost

FIXED, PER_ROW = 0.005, 0.0006  # a 2-core CPU's int8 135M step: 5 ms to read the weights, 0.6 ms a row


def test_the_line_is_fitted_from_steps_whose_rows_vary():
    c = BatchStepCost()
    rng = np.random.default_rng(0)
    for _ in range(200):
        rows = int(rng.integers(4, 80))
        c.add(rows, (FIXED + PER_ROW * rows) * rng.uniform(0.97, 1.03))
    fixed, per_row = c.line()
    assert fixed == pytest.approx(FIXED, rel=0.15) and per_row == pytest.approx(PER_ROW, rel=0.05)


def test_with_rows_that_never_vary_the_prior_splits_the_step():
    c = BatchStepCost()
    for _ in range(50):
        c.add(16, FIXED + PER_ROW * 16)
    fixed, per_row = c.line()
    assert fixed + 16 * per_row == pytest.approx(FIXED + 16 * PER_ROW)  # the step itself is right
    assert fixed == pytest.approx(8 * per_row)


def test_the_charge_is_the_step_alone_and_a_share_plus_marginal_rows_in_a_batch():
    c = BatchStepCost()
    for rows in list(range(1, 60)) * 4:
        c.add(rows, FIXED + PER_ROW * rows)
    assert c.charge(5, 1) == pytest.approx(FIXED + 5 * PER_ROW, rel=0.02)
    plain, draft = c.charge(1, 16), c.charge(9, 16)
    assert plain == pytest.approx(FIXED / 16 + PER_ROW, rel=0.05)
    assert draft - plain == pytest.approx(8 * PER_ROW, rel=0.05)
    # a draft of 8 nodes now pays only if it is accepted far more than alone: with it a request
    # gets (1 + a) tokens per `draft` seconds against 1 per `plain`
    alone = (c.charge(9, 1) - c.charge(1, 1)) / c.charge(1, 1)
    assert (draft - plain) / plain > 4 * alone
