#!/usr/bin/env bash
# The GPU figures of the README's Performance table in one run on a lent GPU machine
# (see docs/architecture.md, "GPU figures"): the bare network and the real training loop
# per input path (bench_gpu.py), then the paper preset end to end on the demo cohort, fold
# 0 (bench_paper_gpu.py). Writes JSON and logs to $OUT (default benchmarks/out/gpu).
#   bash benchmarks/gpu_session.sh
set -uo pipefail
out="${OUT:-benchmarks/out/gpu}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1
python3 benchmarks/bench_gpu.py --device cuda --json "$out/bench_gpu.json" 2>&1 | tee "$out/bench_gpu.log"
python3 benchmarks/bench_paper_gpu.py --limit-s "${PAPER_LIMIT_S:-300}" --json "$out/bench_paper_gpu.json" 2>&1 \
    | tail -n 200 | tee "$out/bench_paper_gpu.log"
