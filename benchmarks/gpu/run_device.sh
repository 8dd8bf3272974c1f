#!/usr/bin/env bash
# One run on a CUDA machine, from the repository root: GPU tests, the conformance report and the
# CuPy benchmark. Results go to $OUT (default ./gpu-out). No internet and no `pip install` of
# the repository: gpconv is imported through a symlink, array-api-compat and array-api-strict
# (tests/test_array_api.py needs it) from carried wheels (.whl/, git-ignored: `pip download
# array-api-compat array-api-strict --no-deps -d .whl`). Each step has its own timeout and a
# failing step does not stop the next; worst case under 1170 s: 10 s install, 10+15+150+150+35+40+300+150+290 s of steps, 2 s
# kill grace each. Run 1 took pytest 18 s, check 9 s, bench 146 s; the benchmark now starts no new part after
# --budget 110 s. SKIP names steps to leave out (e.g. SKIP="bench_cupy") to fit a short lease.
#
#   OUT=/path/to/out [SKIP="step ..."] bash benchmarks/gpu/run_device.sh
set -u

OUT="${OUT:-$PWD/gpu-out}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
START=$(date +%s)
STATUS="$OUT/status.txt"
: > "$STATUS"

step() {  # step NAME TIMEOUT_S COMMAND...: run, log to $OUT/NAME.txt, record the exit code
  local name=$1 limit=$2
  shift 2
  if [[ " ${SKIP:-} " == *" $name "* ]]; then echo "$name skipped" | tee -a "$STATUS"; return; fi
  echo "=== $name (timeout ${limit}s, t=$(( $(date +%s) - START ))s) ==="
  timeout --kill-after=2 "$limit" "$@" 2>&1 | tee "$OUT/$name.txt"
  local rc=${PIPESTATUS[0]}
  echo "$name rc=$rc" | tee -a "$STATUS"
}

# --- environment: the carried wheels (array-api-compat, array-api-strict), gpconv through a symlink ---------------
timeout 10 python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl \
  || { echo "pip install of the wheel failed; unzipping it instead" | tee -a "$STATUS"
       for w in .whl/*.whl; do python3 -m zipfile -e "$w" /tmp/site; done; }
mkdir -p /tmp/pkg
ln -sfn "$PWD" /tmp/pkg/gpconv
export PYTHONPATH="/tmp/pkg:/tmp/site${PYTHONPATH:+:$PYTHONPATH}"

step nvidia_smi 10 nvidia-smi
step environment 15 python3 -c '
import sys, numpy, array_api_compat, gpconv
print("python", sys.version.split()[0], "numpy", numpy.__version__,
      "array_api_compat", array_api_compat.__version__, "gpconv from", gpconv.__file__)
import cupy
print("cupy", cupy.__version__, "devices", cupy.cuda.runtime.getDeviceCount(),
      cupy.cuda.runtime.getDeviceProperties(0)["name"])
'

# --- correctness: every GPU test (fused kernels vs the float64 reference, conformance) ---------
step pytest_gpu 150 python3 -m pytest -q -p no:cacheprovider -m gpu --durations=15 \
  tests/test_cupy.py tests/test_cupy_train.py tests/test_torch_cuda.py tests/test_array_api.py \
  tests/test_torch_eager.py tests/test_torch_interop.py

# --- torch.compile through the training framework on CUDA (create() picks CUDA when present): the
# compiled train step equals the eager one, a second image size compiles again, exports are copies
step pytest_compile 150 python3 -m pytest -q -p no:cacheprovider tests/test_train.py \
  -k "torch and (compiled_train_steps or snapshots)"

# --- the conformance report, reference and CuPy backend ------------------------------------------
step check 35 python3 -m gpconv.cli check --backend numpy --backend cupy --json "$OUT/check.json"

# --- performance -------------------------------------------------------------------------------
# gpconv bench as a user runs it: cupy (core on the GPU) and torch (CUDA when available).
step gpconv_bench 40 python3 -m gpconv.cli bench --backend cupy --backend torch \
  --json "$OUT/gpconv_bench.json"
# Two cold compiles plus the rounds took about 230 s on an H100 (2026-11-27), hence 300 s.
step gpconv_bench_compile 300 python3 -m gpconv.cli bench --backend torch --compile \
  --json "$OUT/gpconv_bench_compile.json"
step bench_cupy 150 python3 benchmarks/bench_cupy_pointwise.py --budget 100 \
  --json "$OUT/bench_cupy.json"

# torch eager vs torch.compile on CUDA (compiles start no later than --budget s in)
step bench_torch_compile 290 python3 benchmarks/gpu/bench_torch_cuda_compile.py --budget 200 \
  --json "$OUT/bench_torch_compile.json"

echo "=== done in $(( $(date +%s) - START ))s ==="
cat "$STATUS"
