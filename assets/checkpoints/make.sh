#!/usr/bin/env bash
# Rebuild the bundled checkpoints with the project's own CLI, on a CPU, from the repository root:
#   bash assets/checkpoints/make.sh
# Each bundled file is the EMA weights of a run: a self-contained safetensors file (config in its metadata).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}
export DDPM_EXPLORER_RUNS=${DDPM_EXPLORER_RUNS:-runs}

$PY -m ddpm_core.train --dataset digits --steps 4000 --name bundled-digits --preview-every 1000 --checkpoint-every 1000
# class-conditional digits for classifier-free guidance (the Sample page's class picker; bench/bench_guidance.py)
$PY -m ddpm_core.train --dataset digits --class-conditional --label-dropout 0.1 --steps 4000 --name bundled-digits_cond \
  --preview-every 1000 --checkpoint-every 1000
for toy in moons swiss_roll 8gaussians; do
  $PY -m ddpm_core.train --dataset "$toy" --steps 4000 --batch-size 256 --name "bundled-$toy" --preview-every 2000
done

# MNIST 28×28: the cpu-mnist recipe's run in bench/bench_mnist_cpu.py (600 s of training on MNIST's test set images
# 0 … 7,999, 8,000 … 9,999 held out: ddpm_core.idx), saved with the recipe's own settings.
MNIST=${MNIST:-../shared/data/mnist}
if [ -d "$MNIST/MNIST/raw" ]; then
  $PY bench/bench_mnist_cpu.py --data-root "$MNIST" --budgets 600 --peers --save-checkpoint assets/checkpoints/mnist.safetensors
fi

for name in digits digits_cond moons swiss_roll 8gaussians; do
  cp "$DDPM_EXPLORER_RUNS/bundled-$name/ema.safetensors" "assets/checkpoints/$name.safetensors"
  $PY -m ddpm_core.evaluate --checkpoint "assets/checkpoints/$name.safetensors" --n 1000
done
