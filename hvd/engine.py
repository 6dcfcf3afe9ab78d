"""Engine, Result and the one decode loop that every method runs through.

One step: the drafter proposes a tree after the committed tokens; the target scores the root
(the last committed token) and every draft node in one forward; verification keeps the longest
accepted path and adds the bonus token; the cache is compacted to that path; each committed
token goes through the same stop checks as plain decoding, so output ends exactly where `ar`
ends. `ar` is this loop with no drafter (an empty draft every step).

Under a grammar (`Request.grammar`) every choice is made among the tokens the grammar allows
(hvd/verify.py `accept_constrained`), so each method stays token-identical to constrained `ar`.
With grammar-aware drafting (`grammar_drafts`, the default) a step first takes the tokens the
grammar forces (one allowed token after another: a key, a quote, a fixed name) as a chain no
choice is made on, the drafter proposes after them, and its draft is cut at the first node the
grammar refuses; the forced tokens still enter the cache with that forward, and are counted
apart (`StepStats.forced`).
"""
from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator, Optional, Sequence, Union

import torch

from hvd import chat_template, plain_text
from hvd.assets import ModelAssets
from hvd import methods
from hvd.constraints.grammar import Grammars, GrammarSpec, allowed_draft
from hvd.drafters.base import DecodeContext, Drafter, LearnsCost, LearnsOnline
from hvd.drafters.stores import SharedStores
from hvd.errors import InputError, MethodUnavailable
from hvd.hybrid.features import vocab_classes
from hvd.machine import resolve_threads
from hvd.ops import HIDDEN, Chunk, Commit, Prefill, Result, Verified, Verify  # noqa: F401 (Chunk, Result: the public API)
from hvd.targets import loader
from hvd.targets.protocol import Target, TargetConfig
from hvd.targets.select import select
from hvd.scheduler import Scheduler
from hvd.targets.sequences import PrefixCache
from hvd.types import Draft, GenerationStats, StepStats
from hvd.verify import (KeyedSampler, SamplingParams, accept_constrained, accept_greedy, allowed_only,
                        argmax_verifier, verify_keyed)

Messages = list[dict]
PREFIX_BYTES = 2 << 30  # KV bytes of finished requests kept for their next turns (generate_many)
PromptLike = Union[str, Messages]


@dataclass(frozen=True)
class GenerationConfig:
    max_new_tokens: int = 256
    sampling: SamplingParams = SamplingParams()
    seed: Optional[int] = None
    stop: tuple[str, ...] = ()
    max_draft_tokens: Optional[int] = None  # draft nodes verified per step at most (None: the target's limit)
    grammar: Optional[GrammarSpec] = None  # what the output must match (None: anything)
    grammar_drafts: bool = True  # under a grammar: forced tokens taken as they come, drafts cut where refused


@dataclass(frozen=True)
class Request:
    """One generation, as `generate` takes it (`generate_many`, `stream_many`)."""

    prompt: "PromptLike"
    method: str = "suffix"
    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: Optional[int] = None
    stop: tuple[str, ...] = ()
    drafter: Optional[Drafter] = None  # used as given, not forked (tests, the oracle)
    max_draft_tokens: Optional[int] = None
    grammar: Optional[GrammarSpec] = None  # the output must match it (hvd/constraints/grammar.py)
    grammar_drafts: bool = True  # grammar-aware drafting (off: drafts verified as proposed; same output)


@dataclass
class _Stopper:
    """Plain decoding's stop rules, applied one token at a time."""

    tokenizer: object
    eos: frozenset[int]
    stop: tuple[str, ...]
    limit: int  # max new tokens, context window applied
    out: list[int] = field(default_factory=list)
    reason: Optional[str] = None
    stop_at: Optional[int] = None  # char offset where a stop string starts

    def push(self, token: int) -> bool:
        """Append a token; True once generation must end (the token is kept)."""
        self.out.append(token)
        if token in self.eos:
            self.reason = "eos"
        elif self.stop and self._hit_stop():
            self.reason = "stop"
        elif len(self.out) >= self.limit:
            self.reason = "length"
        return self.reason is not None

    def _hit_stop(self) -> bool:
        text = self.tokenizer.decode(self.out, skip_special_tokens=True)
        hits = [text.find(s) for s in self.stop if s in text]
        if hits:
            self.stop_at = min(hits)
        return bool(hits)

    def text(self) -> str:
        text = self.tokenizer.decode(self.out, skip_special_tokens=True)
        return text if self.stop_at is None else text[: self.stop_at]


class Engine:
    """A target model and its tokenizer, ready to generate with any registered method."""

    def __init__(self, target: Target, tokenizer) -> None:
        self.target = target
        self.prefixes = PrefixCache(PREFIX_BYTES)  # finished requests' caches, for `stream_many`'s next turns
        self.tokenizer = tokenizer
        self._argmax_rows = argmax_verifier(target)  # a greedy verify's rows: the target's fused argmax where it has one
        self._drafters: dict[str, Drafter] = {}  # one per method, built once; each request gets its own fork
        self.stores = SharedStores()  # cross-request knowledge the drafters share, bounded
        self.load_notes: tuple[str, ...] = ()  # why `load` passed over a faster dtype ("auto")
        self.model_path: Optional[Path] = None  # where `load` found the model (peers load it again from there)
        fallback = getattr(tokenizer, "eos_token_id", None)
        self.eos_ids = target.eos_ids or frozenset(() if fallback is None else (int(fallback),))
        self._grammars: Optional[Grammars] = None

    @property
    def grammars(self) -> Grammars:
        """Grammars compiled for this model's tokenizer (made on first use)."""
        if self._grammars is None:
            self._grammars = Grammars(self.tokenizer, self.target.vocab_size, sorted(self.eos_ids))
        return self._grammars

    @classmethod
    def load(cls, model: Optional[str] = None, device: Optional[str] = None, reuse_prefix: bool = False,
             dtype: str = "auto", threads: Optional[int] = None) -> "Engine":
        """`reuse_prefix`: prefix caching, a request sharing a prefix with the previous one (a
        chat's next turn) prefills only the new tokens. `dtype`: "int8" runs the model through
        the exact target (hvd/targets/exact.py: int8 weights and activations, batch-invariant
        by construction, AVX2 CPUs); "bfloat16" through the lean Llama target (hvd/targets/lean.py,
        exact where this machine's bf16 kernels are batch-invariant); "float32" through
        transformers; "auto" (the default): the first of int8, bfloat16 (CPUs with bf16 matrix
        units) and float32 that this model and machine pass. Each is checked on the machine
        once (cached). `threads`: CPU threads (default: $OMP_NUM_THREADS, else every core)."""
        threads = resolve_threads(threads)
        torch.set_num_threads(threads)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        path = loader.resolve(model)  # once: the weights and the model's prepared assets
        chosen = select(path, dtype, device, threads, TargetConfig(reuse_prefix=reuse_prefix))
        engine = cls(chosen.target, chosen.tokenizer)
        engine.load_notes = chosen.notes
        engine.model_path = path
        engine.stores.assets = assets = ModelAssets.for_model(path)
        engine.stores.classes = assets.token_classes(chosen.tokenizer, engine.target.vocab_size, vocab_classes)
        return engine

    # ---- input -----------------------------------------------------------------------
    @property
    def template(self) -> str:
        """How messages become tokens: the tokenizer's chat template, or hvd/plain_text.py's rule."""
        return "chat template" if getattr(self.tokenizer, "chat_template", None) else plain_text.TEMPLATE_NAME

    @property
    def template_tools(self) -> bool:
        """Whether the chat template has a tool format (hvd/chat_template.py): `encode`'s
        `tools` reach it."""
        return chat_template.reads_tools(getattr(self.tokenizer, "chat_template", None))

    def encode(self, prompt: PromptLike, tools: Optional[list[dict]] = None) -> list[int]:
        """Token ids of a prompt: a bare string is sent as one user message (through a chat
        template) or as itself (a model without one: hvd/plain_text.py). `tools` (OpenAI's
        `[{"type": "function", "function": {...}}]`) go to a template with a tool format; with
        any other, InputError."""
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        check_messages(messages)
        if tools is not None and not self.template_tools:
            raise InputError("this model's chat template has no tool format: give the tools in the messages")
        if getattr(self.tokenizer, "chat_template", None):
            extra = {"tools": tools} if tools is not None else {}
            ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, **extra)
            ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
        else:
            ids = self.tokenizer.encode(prompt if isinstance(prompt, str) else plain_text.render(messages))
        return [int(i) for i in ids]

    def drafter(self, method: str) -> Optional[Drafter]:
        """The method's drafter, built on first use (which may run the target: verify-cost
        curves) and kept; requests run on its `for_request` forks. None for `ar`."""
        m = methods.get(method)
        if m.make is None:
            return None
        if method not in self._drafters:
            self._drafters[method] = m.make(self.target, self.stores)
        return self._drafters[method]

    def prepare(self, methods: Sequence[str]) -> dict[str, str]:
        """Build the drafters of `methods` now (at load or start-up, never inside a request);
        returns {method: why} for those that cannot run here."""
        unavailable = {}
        for method in methods:
            try:
                self.drafter(method)
            except MethodUnavailable as e:
                unavailable[method] = str(e)
        return unavailable

    # ---- generation --------------------------------------------------------------------
    def token_limit(self, prompt_len: int, max_new_tokens: int) -> int:
        """New tokens a generation may produce: max_new_tokens, capped by the context window."""
        return min(max_new_tokens, self.target.max_context - prompt_len)

    def generate(self, prompt: PromptLike, method: str = "suffix", **kwargs) -> Result:
        chunk = None
        for chunk in self.stream(prompt, method, **kwargs):
            pass
        assert chunk is not None and chunk.result is not None
        return chunk.result

    def stream(
        self,
        prompt: PromptLike,
        method: str = "suffix",
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        top_p: float = 1.0,
        top_k: int = 0,
        seed: Optional[int] = None,
        stop: Sequence[str] = (),
        drafter: Optional[Drafter] = None,
        max_draft_tokens: Optional[int] = None,
        grammar: Optional[GrammarSpec] = None,
        grammar_drafts: bool = True,
    ) -> Iterator[Chunk]:
        """Yield text as tokens are committed; the last chunk carries the Result.

        `drafter` overrides the method's registered drafter (tests, the oracle; used as given,
        not forked);
        `max_draft_tokens` caps the draft nodes verified per step (None: the target's limit);
        `grammar`: the output must match it (GrammarError, an InputError, if it cannot be used),
        `grammar_drafts=False` turns grammar-aware drafting off (the same output).
        Closing the iterator early cancels the generation (the drafter's `end` is not called)."""
        request = Request(prompt, method, max_new_tokens, temperature, top_p, top_k, seed, tuple(stop), drafter,
                          max_draft_tokens, grammar, grammar_drafts)
        yield from self._decode(*self._prepare(request))

    def _prepare(self, r: "Request") -> tuple[list[int], str, Optional[Drafter], GenerationConfig]:
        """A request's token ids, method name, drafter (a fork of the method's, or the one given)
        and generation config, checked."""
        cfg = make_generation_config(r.max_new_tokens, r.temperature, r.top_p, r.top_k, r.seed, r.stop,
                                     r.max_draft_tokens)
        if r.grammar is not None:
            self.grammars.check(r.grammar)  # GrammarError before the request is queued
            cfg = replace(cfg, grammar=r.grammar, grammar_drafts=bool(r.grammar_drafts))
        method = r.method
        if r.drafter is not None:
            chosen, method = r.drafter, getattr(r.drafter, "name", method)
        else:
            proto = self.drafter(method)
            chosen = proto.for_request() if proto is not None else None
        ids = r.prompt if _is_token_ids(r.prompt) else self.encode(r.prompt)
        if len(ids) >= self.target.max_context:
            raise InputError(
                f"prompt is {len(ids)} tokens; the model's context window is {self.target.max_context}"
            )
        return list(ids), method, chosen, cfg

    def generate_many(self, requests: Sequence["Request"], max_batch: int = 16) -> list[Result]:
        """Every request's Result, each the one `generate` gives it alone (see `stream_many`)."""
        results: list[Optional[Result]] = [None] * len(requests)
        for i, chunk in self.stream_many(requests, max_batch):
            if chunk.result is not None:
                results[i] = chunk.result
        return results  # type: ignore[return-value]

    def stream_many(self, requests: Sequence["Request"], max_batch: int = 16) -> Iterator[tuple[int, Chunk]]:
        """(request index, Chunk) as the requests' tokens are committed: a `scheduler` given them
        all in order (each request is checked before any runs). Each request's tokens are the
        ones `generate` gives it alone."""
        sched = self.scheduler(max_batch)
        for i, prepared in enumerate([self._prepare(r) for r in requests]):
            sched.submit(i, prepared)
        yield from sched.run()

    def scheduler(self, max_batch: int = 16, kv_budget: Optional[int] = None) -> Scheduler:
        """A continuous-batching scheduler on this engine (hvd/scheduler.py): submit requests
        (`ready`) as they come, `step` to decode. On a target that holds many sequences (the int8
        target) up to `max_batch` requests run together, one forward a step over all their rows,
        within `kv_budget` bytes of KV cache (None: no bound); elsewhere, or for a drafter that
        cannot share a forward (`Capabilities.alone`), one request at a time. Finished requests' caches are kept in
        `prefixes` for the next request that starts the same way."""
        return Scheduler(self.target, self.prefixes, self._steps, self._decode, max_batch, kv_budget)

    def ready(self, request: "Request") -> tuple:
        """A request checked and made ready for a `scheduler` (InputError or MethodUnavailable if
        it cannot run): its token ids, method, drafter (a fork of the method's) and config."""
        return self._prepare(request)

    def _decode(self, ids: list[int], method: str, drafter: Optional[Drafter], cfg: GenerationConfig) -> Iterator[Chunk]:
        """One request alone: `_steps`' target work done on this engine's target as it asks."""
        steps = self._steps(ids, method, drafter, cfg)
        reply = None
        while True:
            try:
                item = steps.send(reply)
            except StopIteration:
                return
            reply = None
            if isinstance(item, Chunk):
                yield item
            elif isinstance(item, Prefill):
                self.target.set_hidden_layers(item.hidden_layers)  # (): a drafter that reads none
                reply = self.target.prefill(item.ids)
            elif isinstance(item, Verify):
                reply = Verified(self._argmax_rows(item.root, item.draft) if item.greedy
                                 else self.target.verify(item.root, item.draft))
            elif isinstance(item, Commit):
                self.target.commit(item.path)
            else:  # Hidden
                reply = self.target.hidden()  # views, no copy

    def _steps(self, ids: list[int], method: str, drafter: Optional[Drafter], cfg: GenerationConfig):
        """The decode loop of one request, as a coroutine: it yields the target work it needs
        (`Prefill`, `Verify`, `Commit`, `Hidden`; whoever drives it sends back the reply) and the
        `Chunk`s it commits, the last carrying the Result. Driven alone (`_decode`) or beside other
        requests (`generate_many`): the same loop, so the same tokens."""
        t0 = time.perf_counter()
        sampler = KeyedSampler(cfg.sampling, cfg.seed if cfg.seed is not None else secrets.randbits(63))
        limit = self.token_limit(len(ids), cfg.max_new_tokens)
        stopper = _Stopper(self.tokenizer, self.eos_ids, cfg.stop, limit)
        stats = GenerationStats(method=method, prompt_tokens=len(ids), target=type(self.target).__name__,
                                dtype=self.target.precision)
        grammar = self.grammars.matcher(cfg.grammar) if cfg.grammar is not None else None
        pick = _picker(cfg.sampling, sampler, len(ids))

        needs = drafter.capabilities.needs_hidden_states if drafter is not None else ()
        logits = yield Prefill(ids, needs)
        first = pick(logits) if grammar is None else pick(allowed_only(logits, grammar.allowed()))
        if grammar is not None:
            grammar.consume(first)
        stats.prefill_seconds = time.perf_counter() - t0
        done = stopper.push(first)
        shown = ""
        shown = yield from self._emit(stopper, [first], shown, done)
        seq = ids + [first]
        if drafter is not None and not done:
            drafter.begin(ids)
            drafter.observe([first])
        learns_cost = isinstance(drafter, LearnsCost)
        node_limit = self.target.max_draft_nodes
        if cfg.max_draft_tokens is not None:
            node_limit = min(node_limit, cfg.max_draft_tokens)
        aware = grammar is not None and cfg.grammar_drafts
        greedy_rows = cfg.sampling.greedy and grammar is None  # the target's argmax rows will do
        while not done:
            budget = stopper.limit - len(stopper.out) - 1  # draft tokens that can still be used
            t1 = time.perf_counter()
            forced = grammar.forced(min(budget, self.target.max_draft_nodes)) if aware and not needs else []
            if forced and drafter is not None:
                drafter.observe(forced)  # certain: the drafter proposes after them
            draft = Draft.empty()
            depth, nodes = budget - len(forced), node_limit - len(forced)
            if drafter is not None and depth > 0 and nodes > 0:
                hidden = (yield HIDDEN) if needs else None
                cut = _Cut(grammar, forced) if aware else None
                draft = drafter.propose(DecodeContext(seq + forced, len(ids), depth, hidden, cut))
                draft = draft.truncate(depth).head(nodes)
                if aware and not cut.made(draft):  # what the drafter cut already (the hybrid's arms) is not walked again
                    draft = cut(draft)
            full = draft.under(forced)
            t2 = time.perf_counter()
            reply = yield Verify(seq[-1], full, greedy_rows)
            walk = time.perf_counter()
            if grammar is not None:
                path, bonus = accept_constrained(reply.out, full, grammar, _row_picker(cfg.sampling, sampler, len(seq)))
            elif cfg.sampling.greedy:
                path, bonus = accept_greedy(reply.out, full)
            else:
                path, bonus = verify_keyed(reply.out, full, sampler, len(seq))
            yield Commit(path)
            t3 = time.perf_counter()
            if learns_cost:  # in a batch: its charge, plus the grammar's masks on its own rows
                charged = t3 - t2 if reply.seconds is None else reply.seconds + (t3 - walk if grammar is not None else 0.0)
                drafter.verified(len(full), charged, len(seq))
            committed = [full.tokens[i] for i in path] + [bonus]
            source = draft.source or (method if drafter else "ar")
            stats.steps.append(StepStats(source, len(draft), len(path) - len(forced), t2 - t1, t3 - t2, len(forced)))
            kept = []
            for tok in committed:
                kept.append(tok)
                if stopper.push(tok):
                    done = True
                    break
            seq.extend(kept)
            if drafter is not None:
                drafter.observe(kept[len(forced):])
            shown = yield from self._emit(stopper, kept, shown, done)
        if drafter is not None:
            drafter.end(stopper.out)
            if isinstance(drafter, LearnsOnline):
                stats.calibration = drafter.online_state()
        stats.new_tokens = len(stopper.out)
        stats.finish_reason = stopper.reason or "length"
        stats.wall_seconds = time.perf_counter() - t0
        yield Chunk("", [], Result(stopper.text(), list(stopper.out), stats))

    def _emit(self, stopper: _Stopper, tokens: list[int], shown: str, done: bool):
        """Yield the newly visible text (held back while it may still be a stop string's start)."""
        text = stopper.text()
        if not done:
            text = text[: len(text) - _holdback(text, stopper.stop)]
            if text.endswith("\ufffd"):  # an incomplete UTF-8 sequence: wait for the rest
                text = text[:-1]
        if len(text) > len(shown) and text.startswith(shown):
            yield Chunk(text[len(shown):], tokens)
            return text
        if tokens:
            yield Chunk("", tokens)
        return shown


def _holdback(text: str, stops: Sequence[str]) -> int:
    """Length of the longest tail of `text` that is a proper prefix of a stop string."""
    best = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), best, -1):
            if s.startswith(text[-k:]):
                best = k
                break
    return best


def _picker(params: SamplingParams, sampler: KeyedSampler, position: int):
    """The first token's choice (from the prefill's logits, at sequence position `position`)."""
    if params.greedy:
        return lambda logits: int(logits.argmax())
    return lambda logits: sampler(logits, position)


def _row_picker(params: SamplingParams, sampler: KeyedSampler, position: int):
    """A verify row's choice at `depth` below the root (the root's row predicts `position`)."""
    if params.greedy:
        return lambda row, depth: int(row.argmax())
    return lambda row, depth: sampler(row, position + depth)


class _Cut:
    """A step's cut (`DecodeContext.cut`): a draft proposed after `forced` cut where the grammar
    refuses it. It remembers what it returned, so a draft the drafter already cut (the hybrid
    cuts its arms' drafts) is not walked through the grammar again."""

    def __init__(self, grammar, forced: Sequence[int]) -> None:
        self.grammar, self.forced, self._made = grammar, forced, []

    def __call__(self, draft: Draft) -> Draft:
        for token in self.forced:
            self.grammar.consume(token)
        try:
            out = allowed_draft(draft, self.grammar)
        finally:
            self.grammar.rollback(len(self.forced))
        self._made.append(out)
        return out

    def made(self, draft: Draft) -> bool:
        """Whether `draft` is a rooted part of one this cut returned (each of its paths is one of
        that draft's paths, so the grammar allows it)."""
        return any(draft is d or len(d.union(draft)) == len(d) for d in self._made)  # union adds no node


def _is_token_ids(prompt) -> bool:
    return isinstance(prompt, (list, tuple)) and len(prompt) > 0 and all(isinstance(t, int) for t in prompt)


def check_messages(messages) -> None:
    """Raise InputError unless `messages` is a non-empty list of {"role": str, "content": str}
    objects with some text: the one check of a conversation, for every caller."""
    if not isinstance(messages, list) or not messages:
        raise InputError("prompt is empty")
    for m in messages:
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise InputError('messages must be a list of {"role": str, "content": str} objects')
    if not any(m["content"].strip() for m in messages):
        raise InputError("prompt is empty")


def make_generation_config(max_new_tokens, temperature, top_p, top_k, seed, stop, max_draft_tokens=None) -> GenerationConfig:
    if not isinstance(max_new_tokens, int) or max_new_tokens <= 0:
        raise InputError(f"max_new_tokens must be a positive integer, got {max_new_tokens}")
    if temperature < 0:
        raise InputError(f"temperature must be >= 0, got {temperature}")
    if not 0 < top_p <= 1:
        raise InputError(f"top_p must be in (0, 1], got {top_p}")
    if top_k < 0:
        raise InputError(f"top_k must be >= 0, got {top_k}")
    if max_draft_tokens is not None and (not isinstance(max_draft_tokens, int) or max_draft_tokens < 0):
        raise InputError(f"max_draft_tokens must be a non-negative integer, got {max_draft_tokens}")
    return GenerationConfig(max_new_tokens, SamplingParams(float(temperature), float(top_p), int(top_k)), seed,
                            tuple(stop), max_draft_tokens)
