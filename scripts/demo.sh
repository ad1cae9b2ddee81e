#!/usr/bin/env bash
# The main job on one machine: set-up, index samples/ (a local Ray, a local Lance folder), query.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
INDEX=${INDEX:-.snappy-index}
OCR=${OCR:-paddle}
ENCODER=${ENCODER:-lexical}
.venv/bin/snappy index samples --index "$INDEX" --encoder "$ENCODER" --ocr "$OCR"
.venv/bin/snappy inspect "$INDEX"
.venv/bin/snappy query "$INDEX" "zephyr turbine megawatts" --top-pages 2 --overlay out/zephyr.png
.venv/bin/snappy query "$INDEX" "how much cardamom" --top-pages 1 --json
