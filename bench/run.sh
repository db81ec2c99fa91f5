#!/bin/sh
# The one benchmark command: ceiling, our service and its peers, one after another, on this machine.
# Needs wrk (apt-get install -y wrk). Arguments go to `python -m bench all` (e.g. --device cuda).
# Writes bench/results/<date>-<host>.{json,md} and one PNG per workload.
set -eu
cd "$(dirname "$0")/.."
if ! command -v wrk >/dev/null 2>&1; then
    echo "wrk not found: apt-get install -y wrk" >&2
    exit 1
fi
scripts/uv sync --group bench --inexact
exec scripts/uv run --group bench python -m bench all "$@"
