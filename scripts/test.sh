#!/usr/bin/env bash
# The test command: set-up if needed, then the default suite (slow tests excluded).
#   bash scripts/test.sh              # default suite
#   bash scripts/test.sh -m slow      # only the slow tests (Ray head + job submission, ...)
#   bash scripts/test.sh -m ""        # everything
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0  # Ray binds 127.0.0.1 only
exec .venv/bin/python -m pytest "$@"
