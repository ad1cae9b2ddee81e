"""Imports point one way (library <- entry points) and the wheel installs no generic top-level name."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> list[tuple[str, int]]:
    """(module, level) of every import in a file (level > 0: relative)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, 0) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            out.append((node.module or "", node.level))
    return out


def test_the_library_never_imports_the_entry_points():
    offenders = [f"{p.relative_to(ROOT)}: {m}" for p in (ROOT / "snappy").rglob("*.py")
                 for m, level in _imports(p) if level == 0 and m.split(".")[0] in ("pipelines", "snappy_pipelines")]
    assert not offenders, offenders


def test_entry_points_import_each_other_relatively():
    """``pipelines/`` is installed as ``snappy_pipelines``: absolute ``pipelines.x`` imports would break there."""
    offenders = [f"{p.relative_to(ROOT)}: {m}" for p in (ROOT / "pipelines").rglob("*.py")
                 for m, level in _imports(p) if level == 0 and m.split(".")[0] in ("pipelines", "snappy_pipelines")]
    assert not offenders, offenders


def test_wheel_installs_snappy_and_snappy_pipelines_only(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path), str(ROOT)], check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"snappy", "snappy_pipelines"}
    packages = {str(p.parent.relative_to(ROOT)) for p in (ROOT / "snappy").rglob("__init__.py")}
    assert {f"{p}/__init__.py" for p in packages} <= set(names), "a snappy subpackage is missing from the wheel"
    assert {f"snappy_pipelines/{p.name}" for p in (ROOT / "pipelines").glob("*.py")} <= set(names)
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "snappy = snappy_pipelines.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()


def test_the_readme_library_example_runs_as_written():
    """The README's "library in ten lines", run as a user pastes it (from the repository root)."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## The library in ten lines"):]
    code = section[section.index("```python") + len("```python"):section.index("```", section.index("```python") + 9)]
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.splitlines()
    assert lines and any("zephyr" in line.lower() for line in lines), r.stdout  # the query's words are found
