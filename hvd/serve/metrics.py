"""Prometheus metrics of a server (`GET /metrics`), in one registry per app.

Speculative counters carry the names vLLM and llama.cpp both use, with an ``hvd:`` prefix and a
``method`` label: ``hvd:spec_decode_num_drafts_total``, ``..._num_draft_tokens_total``,
``..._num_accepted_tokens_total`` and ``..._num_accepted_tokens_per_pos_total{position}``
(position 0 = the first draft token); steps per arm for hybrids; what `hvd`'s online
calibration has learnt (``hvd:calibration_*``, after each of its requests: the acceptance
curve is the method's, the mode rates and choice the last request's); the verify-cost curve a
method prices drafts by (``hvd:verify_cost_curve_*``: its age and how it came to be, measured,
checked, re-measured or provisional) and the ratios the steps have taught it
(``hvd:verify_cost_ratio``).
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from hvd.types import GenerationStats, OnlineSnapshot

_TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 60)
_TPOT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.15, 0.3, 1)
MAX_POSITIONS = 64  # per-position counters beyond this are folded into the last
CURVE_STATUSES = ("measured", "cached", "re-measured", "provisional")  # CurveInfo.status


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("hvd:requests", "Finished requests by outcome", ["outcome"], registry=r)
        self.waiting = Gauge("hvd:num_requests_waiting", "Requests in the queue", registry=r)
        self.running = Gauge("hvd:num_requests_running", "Requests being decoded", registry=r)
        self.ttft = Histogram("hvd:time_to_first_token_seconds", "Arrival to first token", buckets=_TTFT_BUCKETS,
                              registry=r)
        self.tpot = Histogram("hvd:time_per_output_token_seconds", "Decode seconds per token after the first",
                              buckets=_TPOT_BUCKETS, registry=r)
        self.prompt_tokens = Counter("hvd:prompt_tokens", "Prompt tokens", registry=r)
        self.generation_tokens = Counter("hvd:generation_tokens", "Generated tokens", registry=r)
        self.drafts = Counter("hvd:spec_decode_num_drafts", "Steps that verified a draft", ["method"], registry=r)
        self.draft_tokens = Counter("hvd:spec_decode_num_draft_tokens", "Draft tokens verified", ["method"], registry=r)
        self.accepted = Counter("hvd:spec_decode_num_accepted_tokens", "Draft tokens accepted", ["method"], registry=r)
        self.forced = Counter("hvd:grammar_forced_tokens", "Tokens a grammar forced (committed without a choice)",
                              ["method"], registry=r)
        self.accepted_pos = Counter("hvd:spec_decode_num_accepted_tokens_per_pos", "Accepted draft tokens by position",
                                    ["method", "position"], registry=r)
        self.steps = Counter("hvd:spec_decode_steps", "Verification steps by the arm that drafted them",
                             ["method", "arm"], registry=r)
        self.store_tokens = Gauge("hvd:shared_store_tokens", "Tokens held by a shared cross-request store", ["store"],
                                  registry=r)
        self.mode_rate = Gauge("hvd:calibration_mode_tokens_per_second", "Online calibration: decayed tokens per "
                               "second of each mode (policy, cache-only, model-only)", ["method", "mode"], registry=r)
        self.mode_best = Gauge("hvd:calibration_mode_chosen", "Online calibration: 1 for the mode it runs now",
                               ["method", "mode"], registry=r)
        self.curve_age = Gauge("hvd:verify_cost_curve_age_seconds", "Age of the verify-cost curve a method's drafts "
                               "are priced by (since it was measured)", ["method"], registry=r)
        self.curve_status = Gauge("hvd:verify_cost_curve_status", "1 for how the curve a method uses came to be: "
                                  "measured, cached (checked at start), re-measured or provisional (not cached)",
                                  ["method", "status"], registry=r)
        self.cost_ratio = Gauge("hvd:verify_cost_ratio", "Online calibration: realised over curve verify seconds per "
                                "draft-size bucket (its smallest size)", ["method", "size"], registry=r)
        self.expected_accepted = Gauge("hvd:calibration_expected_accepted", "Online calibration: accepted length "
                                       "a 64-token cache draft is expected to get, per prediction bin",
                                       ["method", "bin"], registry=r)

    def finished(self, stats: GenerationStats, ttft: float) -> None:
        m = stats.method
        self.requests.labels("ok").inc()
        self.ttft.observe(ttft)
        if stats.new_tokens > 1:
            self.tpot.observe(stats.decode_seconds / (stats.new_tokens - 1))
        self.prompt_tokens.inc(stats.prompt_tokens)
        self.generation_tokens.inc(stats.new_tokens)
        for s in stats.steps:
            self.steps.labels(m, s.drafter).inc()
            if s.draft_len:
                self.drafts.labels(m).inc()
                self.draft_tokens.labels(m).inc(s.draft_len)
                self.accepted.labels(m).inc(s.accepted)
                for pos in range(s.accepted):
                    self.accepted_pos.labels(m, str(min(pos, MAX_POSITIONS - 1))).inc()
        if stats.forced_tokens:
            self.forced.labels(m).inc(stats.forced_tokens)
        if stats.calibration is not None:
            self._calibration(m, stats.calibration)

    def _calibration(self, method: str, cal: OnlineSnapshot) -> None:
        if cal.modes is not None:
            for mode, rate in cal.modes.tokens_per_second.items():
                self.mode_rate.labels(method, mode).set(rate)
            for mode in cal.modes.steps:
                self.mode_best.labels(method, mode).set(1.0 if mode == cal.modes.best else 0.0)
        if cal.acceptance is not None:
            for b, accepted in enumerate(cal.acceptance.expected_accepted):
                self.expected_accepted.labels(method, str(b)).set(accepted)
        cost = cal.verify_cost
        if cost is not None:
            for size, ratio in zip([0, *cost.size_edges], cost.ratios):
                self.cost_ratio.labels(method, str(size)).set(ratio)
            if cost.curve is not None:
                self.curve_age.labels(method).set(cost.curve.age_seconds())
                for status in CURVE_STATUSES:
                    self.curve_status.labels(method, status).set(1.0 if status == cost.curve.status else 0.0)

    def render(self) -> bytes:
        return generate_latest(self.registry)
