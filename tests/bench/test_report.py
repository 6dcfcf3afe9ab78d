"""Benchmark metrics on synthetic runs, every number computed by hand."""
from __future__ import annotations

import pytest

from hvd.bench import report
from hvd.offline.replay import StepRecord
from hvd.bench.replay_runner import ReplayRun
from hvd.bench.run import Run
from hvd.bench.runner import PromptRuns

REF1, REF2 = [1] * 11, [2] * 21  # 10 and 20 tokens after the first


def _runs(tokens, ttft, walls, steps=None, draft=0.0):
    return [Run(list(tokens), ttft, w, steps, draft) for w in walls]


@pytest.fixture
def results() -> list[PromptRuns]:
    # p1: decode tok/s = 10 tokens ÷ (wall - 1 s)
    p1 = PromptRuns("p1", "d", REF1, {
        "ar": _runs(REF1, 1.0, [2.0, 3.0, 1.5], steps=10),  # 10, 5, 20 tok/s -> median 10
        "pld": _runs(REF1, 1.0, [1.5, 1.25, 2.0], steps=4, draft=0.05),  # 20, 40, 10 -> median 20: 2x
        "oracle": _runs(REF1, 1.0, [1.1] * 3, steps=2),  # 100 -> 10x
        "hf": _runs(REF1, 1.0, [1.5] * 3),  # 20 -> 2x, no steps known
    })
    # p2: decode tok/s = 20 tokens ÷ (wall - 0.5 s)
    wrong = [2] * 20 + [3]
    p2 = PromptRuns("p2", "d", REF2, {
        "ar": _runs(REF2, 0.5, [2.5] * 3, steps=20),  # 10 tok/s
        "pld": _runs(REF2, 0.5, [0.9] * 2, steps=5, draft=0.05) + _runs(wrong, 0.5, [0.9], steps=5, draft=0.05),  # 50: 5x
        "oracle": _runs(REF2, 0.5, [0.7] * 3, steps=3),  # 100 -> 10x
        "hf": _runs(REF2, 0.5, [2.5] * 3),  # 10 -> 1x
    })
    return [p1, p2]


def _rows(results) -> dict[str, report.Row]:
    rows = report.summarize(results)
    assert all(r.dataset == "d" and r.n_prompts == 2 and r.mode == "timed" for r in rows)
    return {r.method: r for r in rows}


def test_run_rates():
    r = Run([7] * 11, ttft=1.0, wall=3.0, steps=4)
    assert r.decode_tps == 5.0 and r.tau == 2.5
    assert Run([7], 1.0, 2.0).decode_tps == 0.0 and Run([7] * 3, 1.0, 1.0).decode_tps == 0.0
    assert Run([7] * 3, 1.0, 2.0).tau is None


def test_speedup_is_the_median_over_prompts_of_per_prompt_median_ratios(results):
    rows = _rows(results)
    assert rows["ar"].speedup == 1.0
    assert rows["pld"].speedup == pytest.approx((2 + 5) / 2)
    assert rows["oracle"].speedup == pytest.approx(10.0)
    assert rows["hf"].speedup == pytest.approx((2 + 1) / 2)
    assert rows["pld"].tokens_per_second == pytest.approx((20 + 50) / 2)
    assert rows["ar"].tokens_per_second == pytest.approx(10.0)
    assert rows["pld"].prompt_speedups == pytest.approx([2, 5])  # per prompt, in prompt order
    assert rows["pld"].speedup_geomean == pytest.approx(10 ** 0.5)
    assert rows["ar"].speedup_geomean == pytest.approx(1.0)


def test_e2e_speedup_counts_prefill(results):
    # p1: ar e2e tok/s 11/2, 11/3, 11/1.5 -> median 5.5; pld 11/1.5, 11/1.25, 11/2 -> 7.33
    # p2: ar 21/2.5 = 8.4; pld 21/0.9
    p1, p2 = (11 / 1.5) / 5.5, (21 / 0.9) / 8.4
    assert _rows(results)["pld"].e2e_speedup == pytest.approx((p1 + p2) / 2)
    assert _rows(results)["ar"].e2e_speedup == 1.0


def test_tau_forwards_draft_share_and_ttft(results):
    rows = _rows(results)
    pld = rows["pld"]
    assert pld.tau == pytest.approx((3 * 10 + 3 * 20) / (3 * 4 + 3 * 5))  # 90 / 27
    assert pld.fwd_per_100 == pytest.approx(100 * 27 / 90)
    decode = (0.5 + 0.25 + 1.0) + 3 * 0.4
    assert pld.draft_share == pytest.approx(6 * 0.05 / decode)
    assert pld.draft_ms_per_step == pytest.approx(1000 * 6 * 0.05 / 27)
    assert pld.ttft == pytest.approx((1.0 + 0.5) / 2)
    assert rows["ar"].tau == 1.0 and rows["ar"].fwd_per_100 == 100.0 and rows["ar"].draft_share == 0.0
    assert rows["oracle"].tau == pytest.approx((30 + 60) / (6 + 9))
    hf = rows["hf"]  # a peer: forwards and drafting are not known
    assert hf.tau is None and hf.fwd_per_100 is None and hf.draft_share is None and hf.draft_ms_per_step is None


def test_oracle_fraction_and_exactness(results):
    rows = _rows(results)
    assert rows["pld"].oracle_fraction == pytest.approx(3.5 / 10)
    assert rows["ar"].oracle_fraction == pytest.approx(0.1)
    assert rows["oracle"].oracle_fraction == pytest.approx(1.0)
    assert rows["pld"].exact is False  # one repeat on p2 differs in its last token
    assert rows["ar"].exact and rows["oracle"].exact and rows["hf"].exact


def test_no_oracle_means_no_oracle_fraction(results):
    for pr in results:
        del pr.runs["oracle"]
    assert all(r.oracle_fraction is None for r in report.summarize(results))


def test_datasets_are_summarized_apart(results):
    results[1].dataset = "e"
    rows = report.summarize(results)
    assert {(r.dataset, r.method) for r in rows} == {(d, m) for d in "de" for m in ("ar", "pld", "oracle", "hf")}
    pld_e = next(r for r in rows if (r.dataset, r.method) == ("e", "pld"))
    assert pld_e.speedup == pytest.approx(5.0) and pld_e.n_prompts == 1 and pld_e.oracle_fraction == pytest.approx(0.5)


def test_a_suite_spanning_datasets_gets_a_pooled_row(results):
    results[1].dataset = "e"
    rows = {(r.dataset, r.method): r for r in report.summarize(results, {"d": "s", "e": "s"})}
    pooled = rows[("s (all)", "pld")]
    assert pooled.n_prompts == 2 and pooled.speedup == pytest.approx((2 + 5) / 2)
    assert pooled.tau == pytest.approx((3 * 10 + 3 * 20) / (3 * 4 + 3 * 5))  # tokens ÷ forwards over both prompts
    assert pooled.exact is False and rows[("s (all)", "ar")].speedup == 1.0
    alone = report.summarize(results, {"d": "s", "e": "t"})  # one dataset per suite: no pooled row
    assert {r.dataset for r in alone} == {"d", "e"}


def _step(position, accepted, committed, draft_seconds=0.001):
    return StepRecord(position, 5, 10, accepted + 1, accepted + 1, accepted, committed, draft_seconds)


def test_replay_rows_carry_tau_and_drafting_only():
    runs = [
        ReplayRun("p1", "d", "pld", 9, (_step(1, 3, 4), _step(5, 3, 4))),  # 8 tokens in 2 steps
        ReplayRun("p2", "d", "pld", 5, (_step(1, 0, 1), _step(2, 2, 3))),  # 4 in 2
        ReplayRun("p1", "d", "ar", 9, tuple(_step(i, 0, 1, 0.0) for i in range(1, 9))),
    ]
    rows = {r.method: r for r in report.summarize_replay(runs)}
    pld = rows["pld"]
    assert pld.mode == "replay" and pld.n_prompts == 2
    assert pld.tau == pytest.approx(12 / 4) and pld.fwd_per_100 == pytest.approx(100 / 3)
    assert pld.draft_ms_per_step == pytest.approx(1.0)
    assert rows["ar"].tau == 1.0 and rows["ar"].n_prompts == 1
    for field in ("speedup", "e2e_speedup", "tokens_per_second", "ttft", "draft_share", "oracle_fraction", "exact"):
        assert getattr(pld, field) is None
    table = report.markdown(list(rows.values()))
    assert "| d | pld | – | – | 3.00 | 33.3 | – | – | – | – | 1.000 | – | 2 |" in table
    assert "target did not run" in table


JSON_KEYS = {"method", "dataset", "speedup", "e2e_speedup", "tau", "exact", "tokens_per_second",
             "oracle_fraction", "draft_share", "n_prompts"}


def test_rows_serialize_with_the_documented_keys_and_render(results, tmp_path):
    rows = report.summarize(results)
    for r in rows:
        assert JSON_KEYS | {"fwd_per_100", "ttft", "draft_ms_per_step", "mode", "arm_share", "speedup_geomean",
                            "prompt_speedups", "forced_per_request"} == set(r.to_dict())
    table = report.markdown(rows).splitlines()
    assert table[0].startswith("| dataset | method | speedup | e2e speedup | τ |") and len(table) == 2 + len(rows)
    assert table[2].startswith("| d | ar | 1.00x | 1.00x | 1.00 | 100.0 | 10.0 |")  # ar first
    assert "| d | hf | 1.50x |" in report.markdown(rows) and "| NO |" in report.markdown(rows)
    png = tmp_path / "b.png"
    report.plot(rows, str(png))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_arm_share_is_reported_for_methods_with_several_drafters():
    from hvd.bench.report import _arm_share, markdown, Row
    from hvd.bench.run import Run

    runs = [Run([1, 2, 3], 0.1, 1.0, 2, 0.0, {"suffix": 3, "ar": 1}), Run([1, 2], 0.1, 1.0, 1, 0.0, {"suffix": 1, "aded-greedy": 3})]
    share = _arm_share(runs)
    assert share == {"suffix": 0.5, "aded-greedy": 0.375, "ar": 0.125}
    assert _arm_share([Run([1], 0.1, 1.0, 1, 0.0, {"pld": 4})]) is None  # one drafter: nothing to split
    row = Row("hvd", "d", 1.0, 1.0, 2.0, 50.0, True, 3.0, 0.1, None, 0.0, 2, 0.1, arm_share=share)
    assert "- hvd on d: suffix 50%, aded-greedy 38%, ar 12%" in markdown([row])
