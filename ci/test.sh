#!/usr/bin/env bash
# Set up (ci/setup.sh), then run the whole test suite, the sanitizer pass, and, when this
# machine runs AVX2 code, the quick tier again with host forced to x86-avx2 (CGEN_HOST), plus
# the slow template, model and bench-format tests: an AVX-512 machine then proves the AVX2
# path too.  Tests marked qemu run ARM code, which CGEN_HOST does not change: the forced
# pass leaves them out.  Arguments are passed to the first pytest run only, e.g. ci/test.sh -m "not slow"
# (with arguments, the forced-AVX2 pass is the quick tier alone).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

bash ci/setup.sh

PY="$ROOT/.venv/bin/python"
logs="$(mktemp -d)"
trap 'rm -rf "$logs"' EXIT
PYTEST=("$PY" -m pytest -q -n 2 --timeout=900)
# the slow tests of these files also run in the forced-AVX2 pass (the quick tier runs whole)
AVX2_SLOW_FILES=(tests/test_*templates*.py tests/test_conv_direct.py tests/test_quant.py
                 tests/test_models.py tests/test_model_cli.py tests/test_bench*.py)

names=()
codes=()
# run NAME LOG [env VAR=VALUE...] -- PYTEST-ARGS...: one pass, its exit status recorded;
# "no tests collected" (5) counts as success.
run() {
    local name="$1" log="$logs/$2" envs=()
    shift 2
    while [ "$1" != "--" ]; do envs+=("$1"); shift; done
    shift
    echo "== pytest: $name"
    local rc=0
    env "${envs[@]}" "${PYTEST[@]}" "$@" | tee "$log" || rc=$?
    if [ "$rc" -eq 5 ]; then
        echo "(no tests collected; counted as success)" | tee -a "$log"
        rc=0
    fi
    names+=("$name")
    codes+=("$rc")
}

run "whole suite" main.log -- "$@" tests
run "sanitize pass (ASan/UBSan)" sanitize.log -- -m sanitize --sanitize tests

why="$(env -u CGEN_HOST "$PY" -c 'from targets.target import builtin_targets, cannot_run
t = builtin_targets()
no = cannot_run(t["x86-avx2"])
same = t["host"].cflags == t["x86-avx2"].cflags and "the native run was x86-avx2 already"
print(no and f"this machine cannot run x86-avx2 code ({no})" or same or "")')" \
    || why="the target table did not load (see above)"
if [ -z "$why" ]; then
    run "CGEN_HOST=x86-avx2 quick tier" avx2.log CGEN_HOST=x86-avx2 -- -m "not slow and not qemu" tests
    if [ "$#" -eq 0 ]; then   # the whole suite ran, so its slow tier does here too
        run "CGEN_HOST=x86-avx2 slow template, model and bench tests" avx2_slow.log \
            CGEN_HOST=x86-avx2 -- -m "slow and not qemu" "${AVX2_SLOW_FILES[@]}"
    fi
else
    echo "== pytest: CGEN_HOST=x86-avx2 passes skipped: $why"
fi

# One line per pass; the log then ends on a pytest summary line: the first failing pass's,
# or the whole suite's when every pass succeeded.
echo "== summary"
status=0
last="$logs/main.log"
i=0
for log in main.log sanitize.log avx2.log avx2_slow.log; do
    [ -f "$logs/$log" ] || continue
    echo "${names[$i]} (exit ${codes[$i]}): $(tail -n 1 "$logs/$log")"
    if [ "${codes[$i]}" -ne 0 ] && [ "$status" -eq 0 ]; then
        status="${codes[$i]}"
        last="$logs/$log"
        echo "ci/test.sh: ${names[$i]} failed (exit ${codes[$i]})" >&2
    fi
    i=$((i + 1))
done
tail -n 1 "$last"
exit "$status"
