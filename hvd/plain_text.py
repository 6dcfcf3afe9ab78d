"""How a conversation reaches a model whose tokenizer has no chat template (a base model such as
Gemma 3 270M, whose GGUF carries none).

The rule, the same everywhere (generate, chat, serve, bench):

- a bare prompt (`hvd generate "def fib(n):"`, `/v1/completions`) is the text itself: a base
  model continues it;
- messages become a plain transcript: a system message first as its own paragraph, then each
  turn as ``User: ...`` / ``Assistant: ...`` (tool results as ``Tool: ...``), turns separated
  by a blank line, ending with ``Assistant:`` for the model to continue.

The tokenizer adds its own start token (Gemma's ``<bos>``) as it does for any text.
"""
from __future__ import annotations

from typing import Sequence

SPEAKERS = {"user": "User", "assistant": "Assistant", "tool": "Tool"}
TEMPLATE_NAME = "plain-text transcript (no chat template)"


def render(messages: Sequence[dict]) -> str:
    """The transcript of `messages` (role/content dicts), ending where the assistant speaks next."""
    parts = []
    for m in messages:
        content = m["content"].strip()
        if m["role"] == "system":
            parts.append(content)
        else:
            parts.append(f"{SPEAKERS.get(m['role'], m['role'].capitalize())}: {content}")
    parts.append("Assistant:")
    return "\n\n".join(parts)
