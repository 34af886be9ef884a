#!/usr/bin/env bash
# One prepared command for a lent GPU machine (the `device` tool): no internet, Python 3.12 with the image's
# own torch, at most 64 MiB carried, at most 8 files back, 15 minutes of device time in all. Its steps are capped
# at 100 + 100 + 60 s, so the whole run stays under 5 minutes and a rerun still fits.
#
#   here, once:  .venv/bin/python benchmarks/gpu_check.py prepare      # wheels → .whl/, tokenizer → .gpu/
#   there:       run(command="bash benchmarks/gpu_check.sh", carry=[".whl", ".gpu"], timeout_s=330)
#   here, dry:   bash benchmarks/gpu_check.sh --dry-run               # the same steps on CPU, small models
#
# It runs, each step logged to $OUT and none stopping the others:
#   1. the tests marked `cuda` (tests/test_cuda.py): every method's scoring, train step, next-token
#      distribution and serving in bf16 on the GPU against CPU fp32 on the same random weights, on the tiny
#      matrix and on a random-weight model with SmolLM2-135M's configuration;
#   2. the code of notebooks 00-03, 05 and 06 under the `gpu` profile, shortened (benchmarks/gpu_check.py),
#      on that random 135M model through $LOPT_BACKBONE (a local folder, as a user's own model would be);
#   3. the training-step benchmark in bf16, kit vs PEFT, on random SmolLM2-135M and SmolLM2-1.7B (bf16
#      weights: the `dtype` option) configurations, with the fraction of the measured bf16 matmul peak.
set -uo pipefail
cd "$(dirname "$0")/.."
DRY=""
[ "${1:-}" = "--dry-run" ] && DRY="--dry-run"
OUT=${OUT:-/tmp/gpu_check_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export LOPT_GPU_MODELS=${LOPT_GPU_MODELS:-/tmp/gpu_check_models}
if [ -z "$DRY" ]; then
  PY=python3
  [ -d .whl ] || { echo "no .whl/: run 'python benchmarks/gpu_check.py prepare' here and carry .whl and .gpu"; exit 2; }
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 2
  export PYTHONPATH=/tmp/site:$PWD
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/env.txt" 2>&1
else
  PY=${PY:-.venv/bin/python}
  export LOPT_ACCEL_DEVICE=cpu PYTHONPATH=$PWD
fi
$PY -c "import torch, transformers, peft, accelerate, sys; print(sys.version.split()[0], 'torch', torch.__version__,
'cuda', torch.cuda.is_available(), 'transformers', transformers.__version__, 'peft', peft.__version__,
'accelerate', accelerate.__version__)" | tee -a "$OUT/env.txt"
status=0
start=$SECONDS
$PY benchmarks/gpu_check.py models "$OUT" $DRY > "$OUT/models.log" 2>&1 || status=1
export LOPT_ACCEL_SPECS="tiny-llama,tiny-llama-bos,tiny-gpt2,tiny-gemma3,tiny-qwen2,$LOPT_GPU_MODELS/smollm2-135m-random"
timeout 100 $PY -m pytest -q -m cuda -p no:cacheprovider tests/test_cuda.py -x --junitxml="$OUT/cuda_tests.xml" \
  > "$OUT/cuda_tests.log" 2>&1 || status=1
echo "cuda tests: $(tail -1 "$OUT/cuda_tests.log") ($((SECONDS - start)) s)"
timeout 100 $PY benchmarks/gpu_check.py notebooks "$OUT" $DRY > "$OUT/notebooks.log" 2>&1 || status=1
rm -rf "$OUT/notebooks"  # the figures stay there; notebooks.json holds every notebook's status and numbers
echo "notebooks: $(grep -c ': ok in' "$OUT/notebooks.log") ok, $(grep -c ': failed in' "$OUT/notebooks.log") failed ($((SECONDS - start)) s)"
timeout 60 $PY benchmarks/gpu_check.py bench "$OUT" $DRY --rounds 5 > "$OUT/bench.log" 2>&1 || status=1
tail -12 "$OUT/bench.log"
echo "done in $((SECONDS - start)) s; status $status; files in $OUT: $(ls "$OUT" | tr '\n' ' ')"
exit $status
