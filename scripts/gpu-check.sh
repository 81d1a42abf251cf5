#!/usr/bin/env bash
# On a CUDA machine, in under eight minutes: the inner-loop engine's GPU throughput (`metabench bench`,
# every path, first and second order) and the first minutes of MAML's Omniglot 5-way 1-shot `paper`
# profile, whose log lines give steps per second and the early learning curve. Everything lands in
# ${OUT:-gpu-check}/; the paper run is stopped by SIGTERM at its time limit, which checkpoints it at a
# step boundary (exit 143), so `metabench run maml --benchmark omniglot-5w1s --profile paper --device cuda
# --output OUT/results --resume` continues it to the end.
#
# Usage: METABENCH_DATA=/path/to/archives bash scripts/gpu-check.sh
set -uo pipefail
out="${OUT:-gpu-check}"
mkdir -p "$out"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.csv"
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: this script measures a GPU')" || exit 2

echo "== engine throughput (limit 180 s)"
timeout 180 metabench bench --device cuda --iterations 10 --repeats 3 --json "$out/bench.json" | tee "$out/bench.txt"

echo "== MAML Omniglot 5w1s, paper profile, first minutes (limit 270 s)"
timeout --signal=TERM 270 metabench run maml --benchmark omniglot-5w1s --profile paper --device cuda \
    --output "$out/results" --no-progress 2>&1 | tee "$out/maml-5w1s-paper-start.log"
echo "exit $? (143: stopped at the time limit and checkpointed)"
