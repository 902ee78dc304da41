#!/usr/bin/env bash
# Prepares what benchmarks/gpu_round.sh needs on a GPU machine that reaches no package index: wheels of the
# packages its image lacks (diffusers, lpips and what they need beyond it) and asymvae's own wheel, in .whl/
# (ignored by git; carried to that machine with the working tree). Run from the repository root after
# `make install`. The GPU machine's image holds torch, accelerate, onnx, onnxruntime (CPU), numpy, scipy, pillow.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
rm -rf .whl && mkdir .whl
# Pure-Python wheels: one download serves any Python 3 there.
"$PY" -m pip download -q --no-deps --only-binary=:all: -d .whl \
  diffusers==0.42.1 lpips==0.1.4 importlib_metadata==10.2.0 lazy-importer
"$PY" -m pip wheel -q --no-deps -w .whl .
ls -l .whl
du -sh .whl
