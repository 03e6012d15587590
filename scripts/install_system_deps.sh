#!/usr/bin/env bash
# System packages for the tests that need more than Python (CI installs them; a user without them sees those tests
# skipped): SLURM + munge for tests/test_slurm_workflow.py (a single-node cluster on localhost; no system service is
# configured, the test starts its own daemons), and Chromium for the report check in tests/test_report.py.
# Idempotent and quiet; Debian/Ubuntu; run as root or with passwordless sudo.
set -euo pipefail
PKGS=(slurm-wlm munge chromium)
missing=()
for bin in munged slurmctld slurmd sbatch squeue chromium; do
  command -v "$bin" >/dev/null 2>&1 || [ -x "/usr/sbin/$bin" ] || missing+=("$bin")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install_system_deps: slurm, munge and chromium already installed"
  exit 0
fi
command -v apt-get >/dev/null 2>&1 || { echo "install_system_deps: no apt-get; install ${PKGS[*]} yourself" >&2; exit 1; }
SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  sudo -n true 2>/dev/null || { echo "install_system_deps: needs root (or passwordless sudo)" >&2; exit 1; }
  SUDO=(sudo -n)
fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! { "${SUDO[@]}" apt-get update -qq &&
       "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${PKGS[@]}"; } \
     >"$log" 2>&1; then
  cat "$log" >&2
  echo "install_system_deps: apt-get install ${PKGS[*]} failed" >&2
  exit 1
fi
echo "install_system_deps: installed ${PKGS[*]} (missing before: ${missing[*]})"
