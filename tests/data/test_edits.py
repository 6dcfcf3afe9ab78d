"""The agentic-edit suite: each request names a real function (or parameter) of a small file."""
from __future__ import annotations

import ast
import re

from hvd.data.edits import EDIT_FILE_MAX_TOKENS
from hvd.data.prompts import estimate_tokens

from prompts_util import both_splits


def test_agentic_edit_requests_name_real_functions_of_small_files():
    for p in both_splits("agentic-edit"):
        text = p.messages[0]["content"]
        source = text.split("```python\n", 1)[1].split("```", 1)[0]
        request = text.rsplit("```", 1)[1]
        assert request.strip().endswith("Return the complete updated file.")
        assert 40 <= source.count("\n") <= 150 and estimate_tokens(source) <= EDIT_FILE_MAX_TOKENS
        tree = ast.parse(source)
        defined = {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
        named = re.findall(r"`([\w.]+)`", request)
        assert any(n.split(".")[-1] in defined for n in named), (p.id, request)
        if p.id.endswith(":rename-parameter"):
            params = {a.arg for n in ast.walk(tree) if isinstance(n, ast.arguments) for a in (*n.posonlyargs, *n.args, *n.kwonlyargs)}
            assert named[0] in params
