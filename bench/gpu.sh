#!/bin/bash
# There, on the lent GPU machine, after `sh bench/gpu_prepare.sh` here:
#   run(command="bash bench/gpu.sh", carry=[".whl", ".gpu"], timeout_s=540)
# Installs the carried wheels (and builds pdqhash) into /tmp/site, then runs `python -m bench.gpu`,
# which writes gpu.json, gpu.md and tune.json to $OUT, and its log to $OUT/gpu.log.
set -euo pipefail
export PYTHONUNBUFFERED=1
out=${OUT:-/tmp/bench-gpu}
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
pip=(python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site)
"${pip[@]}" .whl/*.whl
# pdqhash has no wheel for Python 3.12: built here from its source (Cython and a compiler are in the image).
# Without it every photo is indexed without its duplicate signals, and gpu.json says so.
"${pip[@]}" --no-build-isolation .whl/pdqhash-*.tar.gz || echo "pdqhash did not build: indexing without duplicate signals"
export PYTHONPATH="/tmp/site:$PWD"
python3 -m bench.gpu --corpus .gpu/corpus --out "$out" 2>&1 | tee "$out/gpu.log"
