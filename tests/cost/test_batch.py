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
    line = c.line()
    assert line.fixed == pytest.approx(FIXED, rel=0.15) and line.per_row == pytest.approx(PER_ROW, rel=0.05)
    assert line.per_request < 0.05 * PER_ROW  # a request costs its rows here


def test_with_rows_that_never_vary_the_prior_splits_the_step():
    c = BatchStepCost()
    for _ in range(50):
        c.add(16, FIXED + PER_ROW * 16)
    line = c.line()
    assert line.fixed + 16 * line.per_row == pytest.approx(FIXED + 16 * PER_ROW)  # the step itself is right
    assert line.fixed == pytest.approx(8 * line.per_row) and line.per_request == 0


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


def test_a_cost_per_request_beyond_its_rows_is_told_apart_from_the_rows():
    """vLLM's CPU backend on long prompts: each request costs more than its rows (its attention
    over its own context); a plane fitted to requests and rows prices a draft row at its own
    cost, where a line in rows alone would charge it the request's too."""
    c = BatchStepCost()
    rng = np.random.default_rng(1)
    fixed, per_request, per_row = 0.020, 0.0025, 0.0025
    for _ in range(300):
        requests = int(rng.integers(1, 9))
        rows = requests + int(rng.integers(0, 6)) * requests
        c.add(rows, (fixed + per_request * requests + per_row * rows) * rng.uniform(0.97, 1.03), requests)
    line = c.line()
    assert line.per_request == pytest.approx(per_request, rel=0.2) and line.per_row == pytest.approx(per_row, rel=0.1)
    assert line.plain(8) == pytest.approx(fixed + 8 * (per_request + per_row), rel=0.05)
    assert line.charge(1, 8) == pytest.approx(fixed / 8 + per_request + per_row, rel=0.05)
