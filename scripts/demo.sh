#!/usr/bin/env bash
# The main job on the embedded default dataset: simulate -> masks -> evaluate (prints figures).
set -eo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
. "$ROOT/scripts/bootstrap.sh"
cd "$ROOT"
python -m picker3d.demo "$@"
