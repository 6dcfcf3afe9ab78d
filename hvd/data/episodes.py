"""Multi-turn agent episodes for the agent-loop benchmarks (hvd/bench/agent.py, load.py): BFCL
multi_turn_base scenarios (hvd.data.bfcl), two successive whole-file edits of a standard
library module (hvd.data.edits) and MT-Bench's two-turn questions (hvd.data.chat), split by
the same keys as the suites they come from."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Optional

from hvd.data import bfcl
from hvd.data.chat import mtbench_path
from hvd.data.edits import edit_files, edit_request_text, edit_requests
from hvd.data.prompts import estimate_tokens, read_jsonl, split_of


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
    tools_json: str = "[]"  # its functions as OpenAI `tools` (tools)
    tools_system: Optional[str] = None  # the system prompt when the functions go as `tools`

    @property
    def tools(self) -> list[dict]:
        return json.loads(self.tools_json)

    def backends(self) -> list[Any]:
        config = json.loads(self.state_json)
        return [bfcl.backend(c, config) for c in self.classes]


def tool_episodes(split: str = "eval", limit: Optional[int] = None, max_turns: int = 3) -> list[Episode]:
    """BFCL v4 multi_turn_base scenarios as episodes (first `max_turns` user turns), in a fixed order."""
    out = []
    for row in bfcl.multi_turn_rows("base"):
        if split_of(bfcl.split_key(row)) != split:
            continue
        system, added = bfcl.scenario_start(row)
        turns = tuple(bfcl.turn_request(q, added.get(t, [])) for t, q in enumerate(row["question"][:max_turns]))
        if estimate_tokens(system) + sum(map(estimate_tokens, turns)) > bfcl.TOOLS_MAX_PROMPT_TOKENS / 2:
            continue  # leave room for replies and results in the context
        tools_system, tools = bfcl.scenario_tools(row)
        out.append(Episode(f"tools:{row['id']}", "tools", system, turns, tuple(row["involved_classes"]),
                           json.dumps(row["initial_config"]), json.dumps(tools), tools_system))
    return out[:limit]


def edit_episodes(split: str = "eval", limit: Optional[int] = None) -> list[Episode]:
    """Two successive whole-file edits of one standard library module per episode."""
    out = []
    for rel, source, funcs in edit_files():
        if split_of(f"stdlib:{rel}") != split:
            continue
        edits = edit_requests(rel, funcs)
        if len(edits) < 2:
            continue
        first = edit_request_text(rel, source, edits[0][1])
        second = f"Now, in the file as you updated it: {edits[1][1]} Return the complete updated file."
        out.append(Episode(f"edit:{rel}", "edit", None, (first, second)))
        if limit is not None and len(out) >= limit:
            break
    return out


def chat_episodes(split: str = "eval", limit: Optional[int] = None) -> list[Episode]:
    """MT-Bench questions with their follow-up turn (the chat suite's split keys)."""
    out = []
    for row in read_jsonl(mtbench_path()):
        key = f"chat:mtbench:{row['question_id']}"
        if split_of(key) != split:
            continue
        out.append(Episode(key, "chat", None, tuple(row["turns"])))
        if limit is not None and len(out) >= limit:
            break
    return out
