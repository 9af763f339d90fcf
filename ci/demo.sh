#!/usr/bin/env bash
# Set up (ci/setup.sh), then run the README's demo: a scheduled matmul compiled
# to C, printed, and checked against numpy.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

bash ci/setup.sh
exec "$ROOT/.venv/bin/python" examples/model.py "$@"
