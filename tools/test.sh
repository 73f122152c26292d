#!/usr/bin/env bash
# The project's test command:  bash tools/test.sh [pytest arguments...]
#
# From a fresh Debian/Ubuntu machine to a test run, and quick when everything is already there:
#   1. system packages for Qt under a virtual X server (Xvfb) - installed with apt-get when
#      missing and running as root, otherwise listed with the command to install them;
#   2. a virtual environment in .venv (created with python3 -m venv when missing);
#   3. pip install -e ".[testing]" - skipped when pyproject.toml has not changed since the last
#      successful install (set SAMPO_REINSTALL=1 to force it);
#   4. python -m pytest -q --durations=15 "$@" - pytest-xvfb starts Xvfb for the napari viewer
#      tests; OMP_WAIT_POLICY=PASSIVE unless set (idle torch threads sleep: fast on busy CI).
# Exits with pytest's status.
#
# Environment: PYTHON (interpreter for a new .venv, default python3), VENV (default .venv),
# SAMPO_REINSTALL=1, SAMPO_SKIP_APT=1.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$(pwd)"
VENV="${VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"

say() { printf '[tools/test.sh] %s\n' "$*" >&2; }

# --- 1. system packages --------------------------------------------------------------------------
# Xvfb and the X/xcb, GL, fontconfig and D-Bus libraries that Qt 6's xcb platform plugin and
# napari's OpenGL canvas load at run time.
APT_PACKAGES=(
    xvfb xauth
    libxcb-icccm4 libxcb-keysyms1 libxcb-image0 libxcb-render-util0 libxcb-xinerama0
    libxcb-xkb1 libxkbcommon-x11-0 libxcb-cursor0 libxcb-shape0
    libgl1 libegl1 libfontconfig1 libdbus-1-3
)

missing_apt_packages() {
    local pkg
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' ||
            printf '%s\n' "$pkg"
    done
}

if [[ "${SAMPO_SKIP_APT:-0}" != 1 ]] && command -v dpkg-query >/dev/null 2>&1; then
    wanted=("${APT_PACKAGES[@]}")
    if ! command -v "$PYTHON" >/dev/null 2>&1; then
        wanted+=(python3 python3-venv)
    elif [[ ! -x "$VENV/bin/python" ]] && ! "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null; then
        wanted+=(python3-venv)  # Debian splits venv/ensurepip out of python3
    fi
    mapfile -t missing < <(missing_apt_packages "${wanted[@]}")
    if ((${#missing[@]})); then
        if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
            say "installing system packages: ${missing[*]}"
            export DEBIAN_FRONTEND=noninteractive
            apt-get update -q
            apt-get install -y -q --no-install-recommends "${missing[@]}"
        else
            say "missing system packages (the viewer tests need them): ${missing[*]}"
            say "install them with:  sudo apt-get install -y ${missing[*]}"
        fi
    fi
elif [[ "${SAMPO_SKIP_APT:-0}" != 1 ]] && ! command -v Xvfb >/dev/null 2>&1; then
    say "not a Debian/Ubuntu system and Xvfb not found: install Xvfb (xorg-x11-server-Xvfb," \
        "xvfb) and Qt's xcb libraries with your package manager for the viewer tests."
fi

# --- 2. virtual environment ----------------------------------------------------------------------
if [[ ! -x "$VENV/bin/python" ]]; then
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' || {
        say "$PYTHON is $("$PYTHON" -V 2>&1); napari-sampo needs Python >= 3.10 (set PYTHON=...)."
        exit 2
    }
    say "creating $VENV with $("$PYTHON" -V 2>&1)"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip
fi
# shellcheck disable=SC1091
source "$VENV/bin/activate"

# --- 3. the package and its test tools -----------------------------------------------------------
STAMP="$VENV/.napari-sampo-testing-installed"
WANT_STAMP="$(cat pyproject.toml "$ROOT/tools/test.sh" | sha256sum | cut -d' ' -f1) $ROOT"
if [[ "${SAMPO_REINSTALL:-0}" == 1 || ! -f "$STAMP" || "$(cat "$STAMP")" != "$WANT_STAMP" ]] ||
    ! python -c 'import napari_sampo, sampo_engine, pytest' 2>/dev/null; then
    say "pip install -e .[testing] (torch and torchvision are not pinned)"
    python -m pip install -q -e ".[testing]"
    printf '%s\n' "$WANT_STAMP" >"$STAMP"
fi

# --- 4. the tests --------------------------------------------------------------------------------
if [[ -z "${DISPLAY:-}" ]] && ! command -v Xvfb >/dev/null 2>&1; then
    say "no DISPLAY and no Xvfb: falling back to QT_QPA_PLATFORM=offscreen (viewer tests may fail)"
    export QT_QPA_PLATFORM="${QT_QPA_PLATFORM:-offscreen}"
fi
# Idle OpenMP threads sleep instead of spinning (the engine's CLI does the same before torch
# loads; see src/sampo_engine/utils/threads.py): on a busy CI machine spinning threads made
# trainings inside the tests many times slower. A policy set by the caller is kept.
if [[ -z "${OMP_WAIT_POLICY:-}" && -z "${GOMP_SPINCOUNT:-}" ]]; then
    export OMP_WAIT_POLICY=PASSIVE
fi
# --durations=15: the slowest tests in every log, so a test that grows into a study is seen.
exec python -m pytest -q --durations=15 "$@"
