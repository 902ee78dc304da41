#!/usr/bin/env bash
# Every GPU speed measurement of the project in one go, for one short run on a lent GPU machine:
#   1. training, the anchor recipe: the plain diffusers loop vs `asymvae train`'s step at 256²x16 and 512²x4,
#      losses compared, then the untried levers (CUDA graphs, max-autotune) while the budget lasts;
#   2. serving: decoding with image and mask at 512², diffusers fp16 eager vs the library's decode levers and the
#      exported ONNX graph (benchmarks/decode_throughput.py);
#   3. memory: the reference engine's x2 recipe at 512²x4, its loop vs ours and ours with gradient checkpointing.
# Prepare here with `bash benchmarks/gpu_wheels.sh` (fills .whl/), then on the GPU machine, from the repository
# root with .whl carried: `bash benchmarks/gpu_round.sh`. Reports and logs go to $OUT (default ./gpu_out);
# Each part has its own time budget (past it no further lever or arm starts), for about 8 minutes in all by the
# first round's compile times (not yet timed: the max-autotune lever's compilation is the unknown).
# PARTS="decode x2" runs only those parts (to split the run over two calls, or redo one).
# `TINY=1 PYTHON=.venv/bin/python bash benchmarks/gpu_round.sh` runs the same steps on the CPU at toy size (a
# smoke test of this script; no speed claim).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu_out}
PYTHON=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if [ -n "${TINY:-}" ]; then  # toy sizes on the CPU, with $PYTHON's own packages
  tiny=--tiny
  echo "no GPU: toy sizes on the CPU" >"$OUT/gpu.txt"
else  # the GPU machine: install what was carried
  tiny=
  [ -d .whl ] || { echo "gpu_round: no .whl/: run benchmarks/gpu_wheels.sh first and carry .whl"; exit 2; }
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "gpu_round: installing the carried wheels in .whl/ failed"; exit 2; }
  export PYTHONPATH=/tmp/site
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
fi
"$PYTHON" -c "import torch, diffusers; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'diffusers', diffusers.__version__)" | tee -a "$OUT/gpu.txt"
started=$(date +%s)
part() {  # part NAME COMMAND...: run one measurement, its output in $OUT/NAME.log; a failure does not stop the rest
  local name=$1; shift
  echo "== $name (at $(( $(date +%s) - started )) s)"
  "$PYTHON" "$@" $tiny --out "$OUT" 2>&1 | grep -v -i "warn" | tee "$OUT/$name.log"
}
for name in ${PARTS:-train decode x2}; do
  case $name in
    train) part train benchmarks/train_throughput.py --steps 30 --timed 10 --budget-s 300 ;;
    decode) part decode benchmarks/decode_throughput.py --budget-s 150 ;;
    x2) part x2 benchmarks/train_throughput.py --recipe reference-x2 --steps 15 ;;
    *) echo "gpu_round: unknown part $name (train, decode, x2)"; exit 2 ;;
  esac
done
echo "gpu_round: done in $(( $(date +%s) - started )) s; reports in $OUT"
