"""The extraction suite: JSON extraction with a schema, from the standard library's sources.

Each prompt shows a small module and asks for its functions as a JSON document: the module's
name and, per function (methods as `Class.method`), its name and its parameters' names. The
prompt carries the JSON schema of the answer (`Prompt.schema`), so `hvd bench --grammar`
decodes it under that schema; the facts are in the module's text, so a reader could check them
with `ast` (the suite does not score answers). Split key ``stdlib:<path>``, as the edit suite's.
"""
from __future__ import annotations

import json
from dataclasses import replace

from hvd.data.edits import edit_files
from hvd.data.prompts import Item, make_prompt

MAX_NEW_TOKENS = 256
MAX_FUNCTIONS = 12  # modules with more are left out: the answer would not fit
SCHEMA = {
    "type": "object",
    "properties": {
        "module": {"type": "string"},
        "functions": {"type": "array", "items": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "parameters": {"type": "array", "items": {"type": "string"}}},
            "required": ["name", "parameters"], "additionalProperties": False}},
    },
    "required": ["module", "functions"], "additionalProperties": False,
}
_REQUEST = ("Here is the file `{rel}` from the Python standard library:\n\n```python\n{source}```\n\n"
            "List its functions and methods as JSON: {{\"module\": \"<module name>\", \"functions\": "
            "[{{\"name\": \"<name, or Class.method>\", \"parameters\": [\"<parameter>\", ...]}}, ...]}}, "
            "in the order they appear, and nothing else.")


def extraction_items() -> tuple[Item, ...]:
    """One prompt per small standard library module (split key ``stdlib:<path>``)."""
    schema = json.dumps(SCHEMA)
    items: list[Item] = []
    for rel, source, funcs in edit_files():
        if len(funcs) > MAX_FUNCTIONS:
            continue
        pid = f"extraction:{rel}"
        prompt = make_prompt(pid, "json-extract", MAX_NEW_TOKENS, ("user", _REQUEST.format(rel=rel, source=source)))
        items.append((f"stdlib:{rel}", replace(prompt, schema=schema)))
    return tuple(items)
