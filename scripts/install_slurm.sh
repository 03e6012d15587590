#!/usr/bin/env bash
# Install what tests/test_slurm_cluster_smoke.py needs: SLURM (slurmctld, slurmd, client commands) and munge.
# Idempotent and quiet; for CI on Debian/Ubuntu. Run as root or with passwordless sudo.
# The test starts its own private munged/slurmctld/slurmd (tests/slurm_cluster.py); no system service is configured.
# The Python side (snakemake-executor-plugin-slurm) is a pip install into .venv, not done here.
set -euo pipefail
PKGS=(slurm-wlm munge)
BINS=(munged slurmctld slurmd sbatch srun squeue sinfo scontrol scancel)

have_all() {
  local b
  for b in "${BINS[@]}"; do
    command -v "$b" >/dev/null 2>&1 || [ -x "/usr/sbin/$b" ] || return 1
  done
}

if have_all; then
  echo "install_slurm: slurm and munge already installed ($(/usr/sbin/slurmd -V 2>/dev/null || slurmd -V))"
  exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "install_slurm: apt-get not found; install ${PKGS[*]} with your package manager" >&2
  exit 1
fi
SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO=(sudo -n)
  else
    echo "install_slurm: must run as root (or with passwordless sudo)" >&2
    exit 1
  fi
fi

export DEBIAN_FRONTEND=noninteractive
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! { "${SUDO[@]}" apt-get update -qq &&
       "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${PKGS[@]}"; } >"$log" 2>&1; then
  cat "$log" >&2
  echo "install_slurm: apt-get install ${PKGS[*]} failed" >&2
  exit 1
fi
have_all || { echo "install_slurm: packages installed but binaries missing: ${BINS[*]}" >&2; exit 1; }
echo "install_slurm: installed ${PKGS[*]} ($(/usr/sbin/slurmd -V))"
