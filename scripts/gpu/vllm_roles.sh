#!/usr/bin/env bash
# On a machine with an NVIDIA GPU and vLLM installed with its CUDA dependencies: serve
# SmolLM2-135M-Instruct with the stance resolver plugin, ask each role by spec, print the answers
# and the time to first token of a cold adapter vs a warm one, then move an alias under
# `stance follow`. See benchmarks/vllm_serve.py (its options pass through).
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v nvidia-smi >/dev/null || { echo "error: no NVIDIA GPU here (nvidia-smi missing)" >&2; exit 1; }
python=.venv/bin/python
[ -x "$python" ] || python=python3
"$python" -c "import vllm, torch; assert torch.cuda.is_available()" 2>/dev/null || {
  echo "error: vLLM with CUDA is not importable by $python (pip install vllm)" >&2; exit 1; }
"$python" -m pip install --quiet --no-deps --no-build-isolation -e .  # registers the vllm.general_plugins entry point
exec "$python" benchmarks/vllm_serve.py "$@"
