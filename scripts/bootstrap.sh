#!/usr/bin/env bash
# Set up (idempotently) everything picker3d needs, inside the checkout:
#   .venv/     virtual environment (torch 2.13.0 CPU installed first, then the package + tests)
#   .scipion/  SCIPION_HOME with config/scipion.conf and hosts.conf, user data in .scipion/data
# Source it (". scripts/bootstrap.sh") to get the environment variables in your shell.
set -eo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${PICKER3D_VENV:-$ROOT/.venv}"
# Scipion needs Tkinter: prefer an interpreter that has it, else install Debian's python3-tk
pick_python() {
    for c in "${PYTHON:-}" python3.11 python3; do
        if [ -n "$c" ] && command -v "$c" >/dev/null 2>&1 && "$c" -c "import tkinter" 2>/dev/null; then
            echo "$c"; return
        fi
    done
    echo "${PYTHON:-python3}"
}
PYTHON_BIN="$(pick_python)"
if ! "$PYTHON_BIN" -c "import tkinter" 2>/dev/null && command -v apt-get >/dev/null 2>&1; then
    echo "[bootstrap] installing python3-tk (Scipion needs Tkinter)"
    (apt-get install -y -qq python3-tk >/dev/null 2>&1 || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq python3-tk >/dev/null 2>&1; }) || true
fi

# The GUI test runs Scipion's project window on a virtual display
if ! command -v Xvfb >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
    echo "[bootstrap] installing xvfb (virtual display for the GUI test)"
    (apt-get install -y -qq xvfb >/dev/null 2>&1 || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq xvfb >/dev/null 2>&1; }) || true
fi

if [ ! -x "$VENV/bin/python" ]; then
    echo "[bootstrap] creating virtual environment $VENV"
    "$PYTHON_BIN" -m venv "$VENV"
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"
stamp="$VENV/.picker3d-installed"
if [ ! -f "$stamp" ] || [ "$ROOT/setup.py" -nt "$stamp" ]; then
    python -m pip install -q --upgrade pip
    # torch first and pinned: an open range would pull a multi-GB CUDA build
    python -c "import torch" 2>/dev/null || python -m pip install -q "torch==2.13.0"
    python -m pip install -q -e "$ROOT[scipion,engine,test]" scipion-app
    touch "$stamp"
fi

export SCIPION_HOME="${SCIPION_HOME:-$ROOT/.scipion}"
export SCIPION_USER_DATA="${SCIPION_USER_DATA:-$SCIPION_HOME/data}"
export SCIPION_TESTS="${SCIPION_TESTS:-$SCIPION_HOME/tests}"
export SCIPION_DOMAIN=pwem
export SCIPION_PYTHON="$VENV/bin/python"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(nproc)}"
if [ ! -f "$SCIPION_HOME/config/scipion.conf" ]; then
    mkdir -p "$SCIPION_HOME"
    python -c "import sys; from scipion.__main__ import main; sys.argv=['scipion','config','--unattended']; main()" >/dev/null
    echo "[bootstrap] Scipion configuration written to $SCIPION_HOME/config"
fi
