"""What a step of many requests costs, and what each request is charged for its verify.

A batched step is one forward over every running request's rows; on a CPU its seconds grow
with the rows from a fixed part (reading the weights once, whatever the rows):
S = fixed + per_row x rows. `BatchStepCost` fits that line online from the steps' wall times
(decayed least squares, the slope pulled towards a prior that puts the fixed part at `PRIOR_ROWS`
rows until the rows have varied enough to tell).

A draft pays for the batch when its expected accepted tokens per second of the rows it adds beat
the batch's own tokens per second: a accepted tokens for n more rows pay when
a / (per_row x n) > tokens per step / S. Charging each request, for its verify, its share of the
fixed part plus the marginal cost of its own rows,

    charge(rows) = fixed / batch + per_row x rows,

makes a request's own rule ("does this draft raise my tokens per second?") that same rule: with
one request the charge is the step, and as the batch grows a plain step gets cheaper to the
request while a draft node's price stays, so drafts must be accepted more often to pay, down to
none. Every method that sizes drafts by a verify-cost curve learns the charges through its
online calibration (hvd/cost/calibrator.py), so it drafts less as the batch grows on its own.
"""
from __future__ import annotations

from dataclasses import dataclass

DECAY = 0.02  # weight lost by older steps at each step (a memory of ~50 steps)
PRIOR_ROWS = 8.0  # the prior: the fixed part costs as much as this many rows
PRIOR_WEIGHT = 4.0  # ... held as firmly as this many steps PRIOR_SPREAD rows from the mean would hold a slope
PRIOR_SPREAD = 4.0


@dataclass
class BatchStepCost:
    """Decayed sums of steps' rows and seconds; `fixed` and `per_row` fitted from them."""

    decay: float = DECAY
    w: float = 0.0
    r: float = 0.0
    s: float = 0.0
    rr: float = 0.0
    rs: float = 0.0

    def add(self, rows: int, seconds: float) -> None:
        """A step of `rows` rows took `seconds`."""
        k = 1.0 - self.decay
        self.w, self.r, self.s = k * self.w + 1.0, k * self.r + rows, k * self.s + seconds
        self.rr, self.rs = k * self.rr + rows * rows, k * self.rs + rows * seconds

    def line(self) -> tuple[float, float]:
        """(fixed, per_row) seconds; (0, 0) before any step."""
        if self.w == 0:
            return 0.0, 0.0
        mr, ms = self.r / self.w, self.s / self.w
        prior = ms / (mr + PRIOR_ROWS)  # the slope if the fixed part were PRIOR_ROWS rows
        lam = PRIOR_WEIGHT * PRIOR_SPREAD ** 2
        var = self.rr - self.r * mr  # centred sums
        cov = self.rs - self.r * ms
        per_row = max((cov + lam * prior) / (max(var, 0.0) + lam), 0.0)
        fixed = max(ms - per_row * mr, 0.0)
        return fixed, per_row

    def charge(self, rows: int, batch: int) -> float:
        """Seconds a request with `rows` rows in a step of `batch` requests is charged."""
        fixed, per_row = self.line()
        return fixed / batch + per_row * rows
