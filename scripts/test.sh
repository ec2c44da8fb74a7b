#!/usr/bin/env bash
# Run the whole test suite on a fresh machine (sets everything up first).
set -eo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
. "$ROOT/scripts/bootstrap.sh"
cd "$ROOT"
set +e
python -m pytest -p no:cacheprovider "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
    echo "picker3d: pytest collected no tests: failing" >&2
    exit 1
fi
exit "$rc"
