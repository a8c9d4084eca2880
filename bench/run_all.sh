#!/usr/bin/env bash
# Every CPU benchmark, one after the other, each appending its section to bench/RESULTS.md (how long a run takes:
# bench/RESULTS.md; run nothing else meanwhile: the numbers are wall times). The GPU script is separate:
#   python bench/gpu_mnist.py --data-root <MNIST> --out OUT --write   (on a CUDA machine)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
run() { echo "=== $* ($(date +%H:%M:%S))"; "$PY" "$@" --write; }
run bench/bench_race.py
run bench/bench_sampling.py
run bench/bench_throughput.py
run bench/bench_forward.py
run bench/bench_ui.py
run bench/bench_load.py
run bench/bench_load.py --sessions 10 --with-training
run bench/bench_load.py --sessions 10 --with-training --torch-threads default
run bench/bench_threads.py
run bench/bench_load.py --sessions 10 --duration 180
MNIST=${MNIST:-../shared/data/mnist}  # MNIST's test set in torchvision's layout (its run time: bench/RESULTS.md)
if [ -d "$MNIST/MNIST/raw" ]; then run bench/bench_mnist_cpu.py --data-root "$MNIST"; else echo "=== no MNIST under $MNIST: bench_mnist_cpu.py skipped"; fi
echo "=== done ($(date +%H:%M:%S))"
