#!/usr/bin/env bash
# Set up a fresh Debian/Ubuntu machine for cgen: toolchains, QEMU, sshd and a
# virtualenv at .venv with the package installed in editable mode.
# Idempotent: on an already set-up machine it only checks and prints a summary.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

have_cmd() { command -v "$1" >/dev/null 2>&1; }
have_pkg() { dpkg -s "$1" >/dev/null 2>&1; }

# ---------------------------------------------------------------- python ----
# First python3 that is >= 3.10 ($PYTHON wins if set).
PY=""
for cand in ${PYTHON:-} python3 python3.13 python3.12 python3.11 python3.10; do
    if have_cmd "$cand" &&
        "$cand" -c 'import sys; sys.exit(sys.version_info < (3, 10))' >/dev/null 2>&1; then
        PY="$(command -v "$cand")"
        break
    fi
done

# ------------------------------------------------------- system packages ----
# Each entry: "debian-package|check", where check is "cmd:NAME", "file:PATH"
# or empty (then `dpkg -s` alone decides). A package counts as present when
# dpkg knows it or its command/file is there.
PKGS=(
    "gcc|cmd:gcc"
    "libc6-dev|file:/usr/include/stdio.h"
    "make|cmd:make"
    "clang|cmd:clang"
    "libomp-14-dev|file:/usr/lib/llvm-14/lib/libomp.so"
    "libclang-rt-14-dev|"
    "gcc-aarch64-linux-gnu|cmd:aarch64-linux-gnu-gcc"
    "gcc-arm-linux-gnueabihf|cmd:arm-linux-gnueabihf-gcc"
    "binutils-aarch64-linux-gnu|cmd:aarch64-linux-gnu-objdump"
    "binutils-arm-linux-gnueabihf|cmd:arm-linux-gnueabihf-objdump"
    "libc6-dev-arm64-cross|file:/usr/aarch64-linux-gnu/include/stdio.h"
    "libc6-dev-armhf-cross|file:/usr/arm-linux-gnueabihf/include/stdio.h"
    "qemu-user|cmd:qemu-aarch64 cmd:qemu-arm"
    "qemu-system-arm|cmd:qemu-system-arm cmd:qemu-system-aarch64"
    "gcc-arm-none-eabi|cmd:arm-none-eabi-gcc"
    "libnewlib-arm-none-eabi|"
    "openssh-server|file:/usr/sbin/sshd"
    "llvm|cmd:llvm-mca"
    "valgrind|cmd:valgrind"
)

check_ok() {  # all space-separated checks in $1 pass (empty: fail)
    local c
    [ -n "$1" ] || return 1
    for c in $1; do
        case "$c" in
            cmd:*) have_cmd "${c#cmd:}" || return 1 ;;
            file:*) [ -e "${c#file:}" ] || return 1 ;;
        esac
    done
}

missing=()
for entry in "${PKGS[@]}"; do
    pkg="${entry%%|*}"
    chk="${entry#*|}"
    have_pkg "$pkg" || check_ok "$chk" || missing+=("$pkg")
done
if [ -z "$PY" ]; then
    missing+=(python3 python3-venv)
elif ! "$PY" -m venv --help >/dev/null 2>&1 || ! "$PY" -c 'import ensurepip' >/dev/null 2>&1; then
    missing+=(python3-venv)
fi

if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ]; then
        echo "ci/setup.sh: installing ${missing[*]}" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o Dpkg::Use-Pty=0 --no-install-recommends "${missing[@]}"
    else
        echo "ci/setup.sh: missing system packages; install them as root, then re-run:" >&2
        echo "sudo apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
    if [ -z "$PY" ]; then
        PY="$(command -v python3)"
    fi
fi

# ------------------------------------------------------------------ venv ----
VENV="$ROOT/.venv"
STAMP="$VENV/.stamp"
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
    rm -rf "$VENV"
    "$PY" -m venv "$VENV"
fi

EXTRAS="dev,onnx,cluster"
want="$( (cat "$ROOT/pyproject.toml"; echo "$EXTRAS") | sha256sum | cut -d" " -f1)"
have=""
[ -f "$STAMP" ] && have="$(cat "$STAMP")"
if [ "$have" != "$want" ]; then
    # -qq: only errors (this keeps index/location warnings out of CI logs).
    rm -f "$STAMP"
    "$VENV/bin/python" -m pip install -qq --upgrade pip
    "$VENV/bin/python" -m pip install -qq -e "$ROOT[$EXTRAS]"
    printf '%s' "$want" >"$STAMP"
fi

# --------------------------------------------------------------- summary ----
py_v="$("$VENV/bin/python" -c 'import platform; print(platform.python_version())')"
gcc_v="$(gcc -dumpfullversion 2>/dev/null || gcc -dumpversion)"
clang_v="$(clang --version | sed -n 's/.*clang version \([0-9][0-9.]*\).*/\1/p' | head -n1)"
qemu_v="$(qemu-aarch64 --version | sed -n 's/.*version \([0-9][0-9.]*\).*/\1/p' | head -n1)"
echo "setup ok: python $py_v, gcc $gcc_v, clang $clang_v, qemu-aarch64 $qemu_v"
