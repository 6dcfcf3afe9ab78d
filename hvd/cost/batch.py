"""What a step of many requests costs, and what each request is charged for its verify.

A batched step is one forward over every running request's rows; on a CPU its seconds grow
with the rows from a fixed part (reading the weights once, whatever the rows), and with the
requests themselves where an engine pays per request beyond its rows (its own attention call
over its context, its sampling: vLLM's CPU backend on long prompts, measured ~2.5x a row's cost):

    S = fixed + per_request x requests + per_row x rows.

`BatchStepCost` fits that plane online from the steps' wall times (decayed least squares: the
row slope pulled towards a prior that puts the fixed part at `PRIOR_ROWS` rows, the request
slope towards none, until the steps have varied enough to tell).

A draft pays for the batch when its expected accepted tokens per second of the rows it adds beat
the batch's own tokens per second: a accepted tokens for n more rows pay when
a / (per_row x n) > tokens per step / S. Charging each request, for its verify, its share of the
fixed part plus its own cost and the marginal cost of its own rows,

    charge(rows) = fixed / batch + per_request + per_row x rows,

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
PRIOR_REQUEST_SPREAD = 1.0  # no cost per request beyond its rows, held as firmly as PRIOR_WEIGHT steps
# this many requests from the mean would hold that slope


@dataclass(frozen=True)
class StepLine:
    """A fitted step: seconds = fixed + per_request x requests + per_row x rows."""

    fixed: float = 0.0
    per_request: float = 0.0
    per_row: float = 0.0

    def plain(self, requests: int) -> float:
        """Seconds of a step of `requests` requests without drafts (a row each)."""
        return self.fixed + (self.per_request + self.per_row) * requests

    def charge(self, rows: int, batch: int) -> float:
        """Seconds a request with `rows` rows in a step of `batch` requests is charged."""
        return self.fixed / batch + self.per_request + self.per_row * rows


@dataclass
class BatchStepCost:
    """Decayed sums of steps' requests, rows and seconds; the `StepLine` fitted from them."""

    decay: float = DECAY
    w: float = 0.0
    q: float = 0.0  # requests
    r: float = 0.0  # rows
    s: float = 0.0  # seconds
    qq: float = 0.0
    rr: float = 0.0
    qr: float = 0.0
    qs: float = 0.0
    rs: float = 0.0

    def add(self, rows: int, seconds: float, requests: int = 1) -> None:
        """A step of `requests` requests and `rows` rows in all took `seconds`. A caller that
        always gives the same `requests` (hvd's scheduler: 1) fits the line in rows alone."""
        k = 1.0 - self.decay
        self.w, self.q, self.r, self.s = k * self.w + 1.0, k * self.q + requests, k * self.r + rows, k * self.s + seconds
        self.qq, self.rr = k * self.qq + requests * requests, k * self.rr + rows * rows
        self.qr, self.qs, self.rs = k * self.qr + requests * rows, k * self.qs + requests * seconds, k * self.rs + rows * seconds

    def line(self) -> StepLine:
        """The fitted step (all zero before any step)."""
        if self.w == 0:
            return StepLine()
        mq, mr, ms = self.q / self.w, self.r / self.w, self.s / self.w
        prior = ms / (mr + PRIOR_ROWS)  # the row slope if the fixed part were PRIOR_ROWS rows
        lam_q, lam_r = PRIOR_WEIGHT * PRIOR_REQUEST_SPREAD ** 2, PRIOR_WEIGHT * PRIOR_SPREAD ** 2
        # centred sums; ridge towards (0 per request, `prior` per row)
        a, d = max(self.qq - self.q * mq, 0.0) + lam_q, max(self.rr - self.r * mr, 0.0) + lam_r
        b = self.qr - self.q * mr
        u, v = self.qs - self.q * ms, self.rs - self.r * ms + lam_r * prior
        det = a * d - b * b
        per_request, per_row = (d * u - b * v) / det, (a * v - b * u) / det
        if per_request < 0.0:  # no request costs less than nothing: the rows alone
            per_request, per_row = 0.0, v / d
        elif per_row < 0.0:
            per_request, per_row = u / a, 0.0
        per_row, per_request = max(per_row, 0.0), max(per_request, 0.0)
        fixed = max(ms - per_request * mq - per_row * mr, 0.0)
        return StepLine(fixed, per_request, per_row)

    def charge(self, rows: int, batch: int) -> float:
        """Seconds a request with `rows` rows in a step of `batch` requests is charged."""
        return self.line().charge(rows, batch)
