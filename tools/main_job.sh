#!/usr/bin/env bash
# The project's main job:  bash tools/main_job.sh [sampo-engine demo options...]
#
# On a fresh machine: creates .venv (python3 -m venv), installs napari-sampo with its engine
# (pip install -e .; torch is not pinned, so pip picks the build for this machine), then runs
# `sampo-engine demo`: synthetic H&E-like tiles -> SAMPO training -> held-out T1/T2 Dice, and
# prints where the adapter bundle, the metrics and the plot went. Works offline after the install.
#
# Environment: PYTHON (interpreter for a new .venv, default python3), VENV (default .venv).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV="${VENV:-$(pwd)/.venv}"
PYTHON="${PYTHON:-python3}"
if [[ ! -x "$VENV/bin/python" ]]; then
    echo "[tools/main_job.sh] creating $VENV" >&2
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip
fi
# shellcheck disable=SC1091
source "$VENV/bin/activate"
if ! python -c "import sampo_engine, segment_anything, peft" 2>/dev/null; then
    echo "[tools/main_job.sh] installing napari-sampo (engine) into $VENV" >&2
    python -m pip install -q -e .
fi
exec sampo-engine demo "$@"
