#!/usr/bin/env bash
# Set up (ci/setup.sh), then run the whole test suite, then the sanitizer pass.
# Arguments are passed to the first pytest run only, e.g. ci/test.sh -m "not slow".
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

bash ci/setup.sh

PY="$ROOT/.venv/bin/python"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT

echo "== pytest: whole suite"
status=0
"$PY" -m pytest -q -n 2 --timeout=900 "$@" tests | tee "$log" || status=$?

echo "== pytest: sanitize pass (ASan/UBSan)"
san=0
"$PY" -m pytest -q -n 2 --timeout=900 -m sanitize --sanitize tests || san=$?
if [ "$san" -eq 5 ]; then
    echo "(no sanitize tests collected; counted as success)"
    san=0
fi

# Repeat the main run's closing line so the log ends on the suite's result.
echo "== whole suite (exit $status), sanitize pass (exit $san):"
tail -n 1 "$log"

if [ "$status" -ne 0 ]; then
    echo "ci/test.sh: test suite failed (exit $status)" >&2
    exit "$status"
fi
if [ "$san" -ne 0 ]; then
    echo "ci/test.sh: sanitize pass failed (exit $san)" >&2
    exit "$san"
fi
