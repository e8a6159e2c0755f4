#!/usr/bin/env bash
# One prepared device session (run through the device tool; tried on CPU first with SMOKE=1):
#   1. train the toy-world model on the GPU (time-boxed), pack the weights for the trip back;
#   2. foundation benchmark on an SD-1.5-shaped random UNet at 512²: plain pipeline vs ours vs a
#      whole engine job, fp16 by our device policy, peak memory.
# Everything it produces lands in $OUT.
set -uo pipefail
OUT=${OUT:-/tmp/gpu-out}; mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
export HF_HUB_OFFLINE=1 S2S_HOME=/tmp/s2s-home PYTHONUNBUFFERED=1
PY=${PY:-python3}
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi";
  $PY -c "import torch, diffusers, transformers; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'transformers', transformers.__version__)"; } | tee "$OUT/env.txt"

if [ "${SMOKE:-0}" = 1 ]; then TOY="--preset smoke"; BENCH="--size 64 --steps 4 --repeats 1"; TOY_MIN=1
else TOY="--preset gpu"; BENCH="--sd15 --size 512 --steps 25 --repeats 3"; TOY_MIN=${TOY_MIN:-5}; fi

timeout $(( TOY_MIN * 60 + 90 )) $PY -m engine.toy.train_toy $TOY --max-minutes "$TOY_MIN" --out /tmp/toy-world \
  --work-dir /tmp/toy-work 2>&1 | grep -v Warning | tee "$OUT/toy-train.log" | grep -E "step [0-9]+00/|budget|export|rendered|Error|error" 
if [ -f /tmp/toy-world/model_index.json ]; then
  tar -C /tmp -czf - toy-world | split -b 15M - "$OUT/toy-world.tgz.part-"
fi
timeout 200 $PY -m benchmarks.bench_foundation $BENCH --skip-startup --out "$OUT/foundation-cuda.json" 2>&1 \
  | grep -v -E "Warning|Loading|it/s" | tee "$OUT/bench.log" | tail -12
ls -la "$OUT"

# 3. Prompt-to-Prompt costs on the SD-1.5-shaped model at 512² (P2P edit, heatmaps, re-render,
#    direct inversion; null-text only outside SMOKE). Same card as above, side by side in one run.
if [ "${SMOKE:-0}" = 1 ]; then EDIT="--size 64 --steps 2 --repeats 1 --no-nulltext --device cpu"
else EDIT="--size 512 --steps 50 --repeats 3 --device cuda"; fi
timeout 300 $PY -m benchmarks.edit --sd15-shape $EDIT --json "$OUT/edit-cuda.json" 2>&1 \
  | grep -v -E "Warning|Loading|it/s|float32" | tee "$OUT/edit.log" | tail -12
