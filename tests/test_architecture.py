"""The import contracts of pyproject.toml ([tool.importlinter]) hold: snappy's modules import only
from the layers below them, no two modules import each other (directly or round a loop), and the
library never imports the Ray entry points (docs/architecture.md)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports() -> subprocess.CompletedProcess:
    if not LINT_IMPORTS.exists():
        pytest.fail(f"{LINT_IMPORTS} is missing: install the test extras (pip install -e '.[test]')")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # `pipelines` is a root package of the contracts
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", "--no-logo"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_import_contracts_are_kept():
    out = lint_imports()
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 broken" in out.stdout


def test_the_contracts_cover_the_layers_cycles_and_the_pipelines():
    text = (ROOT / "pyproject.toml").read_text()
    for kind in ('type = "layers"', 'type = "acyclic_siblings"', 'type = "forbidden"'):
        assert kind in text
