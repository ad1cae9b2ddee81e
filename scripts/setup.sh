#!/usr/bin/env bash
# One-time set-up on a fresh machine: .venv with snappy and every dependency (CPU only).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
stamp=$(cat pyproject.toml setup.py scripts/setup.sh | sha256sum | cut -c1-16)
if [ -x .venv/bin/python ] && [ "$(cat .venv/.snappy-setup 2>/dev/null)" = "$stamp" ]; then
  exit 0  # already set up from these files
fi
if [ ! -x .venv/bin/python ]; then "$PY" -m venv .venv; fi
PIP=".venv/bin/python -m pip"
$PIP install -q --upgrade pip
# torch first, pinned: a CPU wheel; anything unpinned pulls a multi-GB CUDA build.
$PIP install -q "torch==2.13.0"
# One resolution of everything else (installing in steps breaks paddlex's pins).
$PIP install -q -e ".[test]"
# One OpenCV: rapidocr pulled opencv-python-headless, whose cv2/ clashes with paddlex's
# opencv-contrib-python; keep the contrib build only.
$PIP uninstall -q -y opencv-python-headless opencv-contrib-python
$PIP install -q --no-deps "opencv-contrib-python==4.10.0.84"
# Optional system packages, installed where apt is usable (their tests skip otherwise): tesseract
# (an OCR engine) and headless Chromium + its driver (the search page's browser tests).
missing=()
command -v tesseract >/dev/null 2>&1 || missing+=(tesseract-ocr)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
if [ ${#missing[@]} -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null) \
    || echo "setup: ${missing[*]} not installed; their tests will be skipped"
fi
.venv/bin/python -c "import snappy, snappy._compat as c; c.ensure_torchvision_importable(); import colpali_engine, cv2; print('setup: ok, cv2', cv2.__version__)"
echo "$stamp" > .venv/.snappy-setup
