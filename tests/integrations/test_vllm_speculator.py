"""hvd's speculative method for vLLM 0.34 (hvd/integrations/vllm_speculator.py) against vLLM's
own classes: registered through the plugin hook, built by vLLM's `init_speculator`, driven
with vLLM's `InputBatch` and `RequestState` as its model runner drives it — requests joining
(one with its prompt in chunks), finishing, rows reordered every step, two requests with the
same prompt — with the verifier simulated (the longest matching prefix of a row's draft
against the request's true continuation, plus one token). Needs vLLM 0.34, whose wheel is a
CUDA build: `make test-vllm034` sets up its Python interface on this CPU and runs this
(skipped elsewhere)."""
import dataclasses
import random
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("vllm.v1.worker.gpu.spec_decode.speculator",
                    reason="vLLM 0.34 is not installed (make test-vllm034 sets it up and runs this)")
import torch  # noqa: E402
from vllm.sampling_params import SamplingParams  # noqa: E402
from vllm.v1.worker.gpu import buffer_utils  # noqa: E402
from vllm.v1.worker.gpu.input_batch import InputBatch  # noqa: E402
from vllm.v1.worker.gpu.spec_decode import init_speculator  # noqa: E402
from vllm.v1.worker.gpu.spec_decode.speculator import BaseSpeculator  # noqa: E402
from vllm.v1.worker.gpu.spec_decode.speculator_config import get_custom_speculator_config_class  # noqa: E402

from hvd.integrations import vllm_plugin, vllm_switch  # noqa: E402
from hvd.integrations.vllm_speculator import HvdSpeculator, HvdSpeculatorConfig  # noqa: E402

MAX_REQS, MAX_LEN, K = 8, 1024, 8


@pytest.fixture(autouse=True)
def cpu_buffers(monkeypatch):
    """vLLM's request-state buffers on the CPU (no pinned memory, no UVA)."""
    from vllm.platforms import current_platform

    monkeypatch.setattr(buffer_utils, "is_uva_available", lambda: False)
    monkeypatch.setattr(buffer_utils, "is_pin_memory_available", lambda: False)
    monkeypatch.setattr(current_platform, "device_type", "cpu", raising=False)


def vllm_config(options=None, adaptive=False):
    spec = SimpleNamespace(num_speculative_tokens=K, speculator_options=options, enable_adaptive_verification=adaptive,
                           method=None, custom_method="hvd")
    assert vllm_plugin.register()
    spec.speculator_config = get_custom_speculator_config_class("hvd")(spec)
    model = SimpleNamespace(max_model_len=MAX_LEN, get_vocab_size=lambda: 49152)
    return SimpleNamespace(speculative_config=spec, model_config=model)


def input_batch(req_ids, slots) -> InputBatch:
    """The fields a speculator reads; the others (the target forward's) left empty."""
    required = {f.name: None for f in dataclasses.fields(InputBatch)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    n = len(req_ids)
    required.update(req_ids=list(req_ids), num_reqs=n, num_reqs_after_padding=n,
                    idx_mapping=torch.tensor(slots, dtype=torch.int32), idx_mapping_np=np.array(slots, dtype=np.int32))
    return InputBatch(**required)


class FakeRunner:
    """vLLM 0.34's model runner around a speculator, with a simulated verifier."""

    def __init__(self, options=None, adaptive=False, seed=0):
        from vllm.v1.worker.gpu.states import RequestState

        self.rs = RequestState(MAX_REQS, MAX_LEN, 2048, K, 49152, torch.device("cpu"), use_dense_all_token_ids=True)
        self.spec = init_speculator(vllm_config(options, adaptive), torch.device("cpu"), self.rs)
        self.rng = random.Random(seed)
        self.reqs: dict[str, dict] = {}
        self.steps = 0
        self.outputs: dict[str, list[int]] = {}
        self.last_drafts: dict[str, np.ndarray] = {}

    def add(self, rid, prompt, truth, chunks=1, params=None):
        self.rs.add_request(rid, len(prompt), list(prompt), 0, len(truth))
        slot = self.rs.req_id_to_index[rid]
        self.rs.all_token_ids.gpu[slot, : len(prompt)] = torch.tensor(prompt)  # what apply_staged_writes does
        self.rs.total_len.gpu[slot] = len(prompt)
        self.rs.prompt_len.np[slot] = len(prompt)
        if params is not None:
            switch.add_request(slot, params)
        self.spec.add_request(slot)
        self.reqs[rid] = {"slot": slot, "truth": list(truth), "prompt_len": len(prompt), "chunks": chunks,
                          "draft": np.full(K, -1)}

    def step(self):
        """Finish, verify, propose: the drafts of this step, by request."""
        done = {r for r, q in self.reqs.items() if self._generated(q) >= len(q["truth"])}
        if done:
            self.spec.on_requests_finished(done)
            for r in done:
                q = self.reqs.pop(r)
                self.outputs[r] = self._tokens(q)[q["prompt_len"]:]
                self.rs.remove_request(r)
        if not self.reqs:
            return {}
        order = list(self.reqs)
        self.rng.shuffle(order)
        sampled = []
        for r in order:
            q = self.reqs[r]
            if q["chunks"] > 1:  # this step ran a chunk of its prompt: nothing sampled
                q["chunks"] -= 1
                sampled.append(0)
                continue
            want = q["truth"][self._generated(q):]
            m = 0
            while m < K and m < len(want) - 1 and q["draft"][m] == want[m]:
                m += 1
            new = want[: m + 1]
            total = int(self.rs.total_len.gpu[q["slot"]])
            self.rs.all_token_ids.gpu[q["slot"], total: total + len(new)] = torch.tensor(new)
            self.rs.total_len.gpu[q["slot"]] = total + len(new)
            sampled.append(len(new))
        batch = input_batch(order, [self.reqs[r]["slot"] for r in order])
        n = torch.tensor(sampled, dtype=torch.int32)
        z = torch.zeros(MAX_REQS)
        drafts = self.spec.propose(batch, {}, {}, None, None, n, torch.zeros_like(n), z, z, z, z)
        assert drafts.shape == (len(order), K) and drafts.dtype == torch.int64
        self.steps += 1
        out = {}
        for b, r in enumerate(order):
            self.reqs[r]["draft"] = d = drafts[b].numpy()
            k = int((d >= 0).sum())
            assert (d[:k] >= 0).all() and (d[k:] == -1).all()  # a chain, then empty slots
            conf = self.spec.draft_token_confidence_probs[b].numpy()
            assert (conf[:k] == 1).all() and (conf[k:] == 0).all()
            out[r] = d[:k].tolist()
        return out

    def run(self):
        while self.reqs:
            self.step()
        self.step()  # the last finish
        return self.outputs

    def _tokens(self, q):
        return self.rs.all_token_ids.gpu[q["slot"], : int(self.rs.total_len.gpu[q["slot"]])].tolist()

    def _generated(self, q):
        return int(self.rs.total_len.gpu[q["slot"]]) - q["prompt_len"]


switch = vllm_switch.SpeculationSwitch()


def text(rng, n, vocab=range(3, 3000)):
    return [rng.choice(vocab) for _ in range(n)]


def test_the_plugin_registers_a_method_whose_speculator_vllm_builds():
    assert vllm_plugin.register() and vllm_plugin.register()  # idempotent: every vLLM process runs it
    config = get_custom_speculator_config_class("hvd")
    assert config is HvdSpeculatorConfig and "speculator_options" in config.supported_options
    runner = FakeRunner()
    assert isinstance(runner.spec, HvdSpeculator) and isinstance(runner.spec, BaseSpeculator)
    assert runner.spec.core.config.full_width  # vLLM verifies every slot without adaptive verification
    assert not FakeRunner(adaptive=True).spec.core.config.full_width
    assert FakeRunner(options={"method": "suffix"}).spec.core.config.method == "suffix"
    with pytest.raises(ValueError, match="unknown hvd option"):
        FakeRunner(options={"arm": "suffix"})


@pytest.mark.parametrize("options", [None, {"method": "suffix"}])
def test_requests_join_finish_and_move_and_copies_are_drafted(options):
    rng = random.Random(1)
    runner = FakeRunner(options)
    truths = {}
    for i in range(5):
        body = text(rng, 120)
        truths[f"copy{i}"] = body[:100]
        runner.add(f"copy{i}", [1, 2, *body], body[:100], chunks=3 if i == 0 else 1)  # copy0: a prompt in chunks
    truths["same-a"], truths["same-b"] = text(rng, 30), text(rng, 30)
    runner.add("same-a", [1, 2, 3, 4, 5], truths["same-a"])
    runner.add("same-b", [1, 2, 3, 4, 5], truths["same-b"])  # the same prompt, another answer
    first = runner.step()
    assert first["copy0"] == []  # mid-prompt: no draft
    while runner.reqs:
        runner.step()
        if len(runner.reqs) < 4 and "late" not in truths:  # a request joins as others have left
            truths["late"] = text(rng, 40)
            runner.add("late", [9, *text(rng, 20)], truths["late"])
    runner.step()
    assert runner.outputs == truths  # (the simulated verifier commits the truth; drafts only change the steps)
    assert runner.steps < 60  # a hundred copied tokens a request, in far fewer steps
    assert runner.spec._requests == {}  # every finished request's state is freed


def test_a_finished_requests_output_feeds_the_cross_request_store():
    rng = random.Random(2)
    runner = FakeRunner({"method": "suffix"})
    answer = text(rng, 80)
    runner.add("a", [1, *text(rng, 20)], answer)
    runner.run()
    first = runner.steps
    assert runner.spec.core.drafter.global_tokens == len(answer)  # the whole output, on the finish hook
    runner.steps = 0
    runner.add("b", [1, *text(rng, 20)], answer)
    runner.run()
    assert runner.steps < first / 3


def test_a_request_can_turn_speculation_off_and_bad_values_are_refused():
    rng = random.Random(3)
    runner = FakeRunner()
    body = text(rng, 60)
    runner.add("off", [1, *body], body, params=SamplingParams(extra_args={"speculative": {"max_draft_tokens": 0}}))
    runner.add("two", [1, *body], body, params=SamplingParams(extra_args={"speculative": {"max_draft_tokens": 2}}))
    runner.add("on", [1, *body], body)
    drafted = {"off": 0, "two": 0, "on": 0}
    while runner.reqs:
        for r, d in runner.step().items():
            drafted[r] = max(drafted[r], len(d))
    assert drafted["off"] == 0 and drafted["two"] == 2 and drafted["on"] > 2
    for bad in ({"max_draft_tokens": -1}, {"max_draft_tokens": "4"}, {"max_draft": 4}, 3):
        with pytest.raises(ValueError):
            vllm_switch.SpeculationSwitch.validate_params(SamplingParams(extra_args={"speculative": bad}))
    vllm_switch.SpeculationSwitch.validate_params(SamplingParams(extra_args={"other": 1}))
    logits = torch.zeros(2, 5)
    assert switch.apply(logits, None) is logits


def test_dummy_runs_and_resets():
    runner = FakeRunner()
    batch = input_batch(["x"], [0])
    n = torch.ones(1, dtype=torch.int32)
    z = torch.zeros(MAX_REQS)
    assert (runner.spec.propose(batch, {}, {}, None, None, n, n, z, z, z, z, dummy_run=True) == -1).all()
    runner.add("a", [1, 2, 3], [4, 5, 6])
    runner.step()
    runner.spec.reset_state()
    assert runner.spec._requests == {}
