#!/usr/bin/env bash
# The GPU check (docs/howto/run-on-a-gpu.md): on a CUDA machine with the project's packages installed, run
#   bench/gpu_check.sh env     versions, the GPU, and a check that float32 matrix products are not TF32
#   bench/gpu_check.sh tests   tests/test_device.py (its CUDA half runs only where CUDA is visible)
#   bench/gpu_check.sh smoke   the smoke workflow with device=cuda (run name smoke-cuda)
#   bench/gpu_check.sh e1      SmolLM2's paper A E1 (rule paperA_inversion, default config) with device=cuda
#                              (run name default-cuda), with the jobs it needs (model cache, two vectors)
# Each prints "gpu_check <part> wall_s=<seconds> rc=<status>" and, for the workflows, every job's benchmarked wall
# time. GPU-built results differ from the committed CPU ones within the float noise; they go under their own run
# names and are never committed. PYTHON (default python3), CORES (default: all) and DEVICE (default cuda; cpu runs
# the same parts on the CPU for comparison, under run names ending in -cpu) can be set.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
CORES=${CORES:-$(nproc)}
DEVICE=${DEVICE:-cuda}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1

jobs_table() {  # every job's wall time from Snakemake's benchmark files of run $1
    "$PY" - "$1" <<'EOF'
import sys
from pathlib import Path

import pandas as pd

for path in sorted(Path("benchmarks", sys.argv[1]).rglob("*.tsv")):
    row = pd.read_csv(path, sep="\t").iloc[-1]
    print(f"  job {path.relative_to('benchmarks').with_suffix('')}  {float(row['s']):.1f} s")
EOF
}

timed() {  # timed <part> <command...>
    local part=$1 start rc
    shift
    start=$(date +%s.%N)
    "$@"
    rc=$?
    echo "gpu_check $part wall_s=$(awk "BEGIN {printf \"%.1f\", $(date +%s.%N) - $start}") rc=$rc"
    return $rc
}

case "${1:-}" in
env)
    "$PY" - <<'EOF'
import importlib.metadata as md

import torch

assert torch.cuda.is_available(), "no CUDA device visible to torch"
print("gpu", torch.cuda.get_device_name(0), "| torch", torch.__version__, "| cuda", torch.version.cuda)
for name in ("transformers", "tokenizers", "huggingface_hub", "snakemake", "scikit-learn", "numpy", "datasets"):
    print(" ", name, md.version(name))
# float32 numerics (noise floors, tau_exact, the bf16 screen's margins) assume full-precision float32 products
print("float32 matmul precision", torch.get_float32_matmul_precision(), "| tf32", torch.backends.cuda.matmul.allow_tf32)
assert torch.get_float32_matmul_precision() == "highest" and not torch.backends.cuda.matmul.allow_tf32
EOF
    ;;
tests)
    timed tests "$PY" -m pytest -q -p no:cacheprovider tests/test_device.py
    ;;
smoke)
    rm -rf results/smoke-$DEVICE figures/smoke-$DEVICE logs/smoke-$DEVICE benchmarks/smoke-$DEVICE
    timed smoke "$PY" -m snakemake --cores "$CORES" --keep-going --scheduler greedy \
        --configfile config/smoke.yaml --config run=smoke-$DEVICE device=$DEVICE
    rc=$?
    jobs_table smoke-$DEVICE
    exit $rc
    ;;
e1)
    # the default config with SmolLM2 alone (the model preflight then needs only its package) and paper B off;
    # paper A's E1 settings are unchanged
    cfg=$(mktemp --suffix=.yaml)
    "$PY" - "$cfg" "$DEVICE" <<'EOF'
import sys

import yaml

cfg = yaml.safe_load(open("config/default.yaml"))
cfg.update(models={"smollm2-135m": cfg["models"]["smollm2-135m"]}, run=f"default-{sys.argv[2]}", paperB={"enabled": False})
yaml.safe_dump(cfg, open(sys.argv[1], "w"), sort_keys=False)
EOF
    rm -rf results/default-$DEVICE logs/default-$DEVICE benchmarks/default-$DEVICE
    timed e1 "$PY" -m snakemake results/default-$DEVICE/paperA/inversion/smollm2-135m.positions.csv \
        --cores "$CORES" --scheduler greedy --configfile "$cfg" --config device=$DEVICE
    rc=$?
    jobs_table default-$DEVICE
    exit $rc
    ;;
*)
    sed -n '2,10p' "$0"
    exit 2
    ;;
esac
