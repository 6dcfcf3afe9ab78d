"""The JSON schema of an answer that is a list of function calls, `[{"name": ..., "arguments":
{...}}, ...]`: what an enforced tool call (hvd/serve/tools.py) and the structured suite's answers
(hvd/data/bfcl.py) must match."""
from __future__ import annotations

from typing import Optional, Sequence


def calls_schema(functions: Sequence[tuple[str, dict]], most: Optional[int] = None) -> dict:
    """A non-empty list of calls (at most `most`), each of one of `functions` ((name, arguments
    schema) pairs)."""
    calls = [{"type": "object", "properties": {"name": {"const": name}, "arguments": arguments},
              "required": ["name", "arguments"], "additionalProperties": False} for name, arguments in functions]
    out = {"type": "array", "items": calls[0] if len(calls) == 1 else {"anyOf": calls}, "minItems": 1}
    return out if most is None else {**out, "maxItems": most}
