#!/usr/bin/env bash
# The test command: the default suite (slow tests excluded; `bash scripts/test.sh -m ""` runs all).
set -euo pipefail
cd "$(dirname "$0")/.."
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0  # Ray binds 127.0.0.1 only
exec .venv/bin/python -m pytest "$@"
