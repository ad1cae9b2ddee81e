"""Packaging: the python-snappy import clash is detected and explained."""
from importlib import metadata

import snappy


def test_python_snappy_clash_is_detected(monkeypatch):
    real = metadata.distribution

    def fake(name):
        if name == "python-snappy":
            return object()
        return real(name)

    monkeypatch.setattr(metadata, "distribution", fake)
    msg = snappy._python_snappy_clash()
    assert msg and "python-snappy" in msg and "pip uninstall python-snappy" in msg


def test_no_clash_in_this_environment():
    assert snappy._python_snappy_clash() is None


# ------------------------------------------------------------------ CPU torch + CUDA torchvision
# Each check runs in a fresh interpreter: in this process torchvision may already be imported.

import subprocess  # noqa: E402
import sys  # noqa: E402


def _python(code: str, timeout: float = 300) -> str:
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


def test_import_colpali_engine_after_the_fix():
    """What a user writes beside CPU torch; without the call it raises `Could not import module 'Gemma3Model'`."""
    _python("import snappy; snappy.ensure_torchvision_importable(); import colpali_engine")


def test_geometry_needs_no_explicit_compat_call():
    out = _python(
        "from snappy.patches.geometry import qwen_grid, idefics3_grid\n"
        "print(qwen_grid((1700, 2200), min_pixels=3136, max_pixels=768 * 784).shape)\n"
        "print(idefics3_grid((1700, 2200), longest_edge=1456, tile=364, tokens_per_tile=169).n_tokens)\n"
        "from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize\n"
        "print(smart_resize(2200, 1700, min_pixels=3136, max_pixels=768 * 784))\n"
        "import torchvision.transforms.functional\n")
    assert out.split("\n")[:3] == ["(31, 24)", str(17 * 169), "(868, 672)"]


def test_import_snappy_stays_cheap():
    """No torch at `import snappy`, nor on the weight-free path (lexical encoder, query checks); no
    import hook or other global change either."""
    out = _python(
        "import sys; before = list(sys.meta_path)\n"
        "import snappy, snappy.encoders.lexical, snappy.search.query, snappy.patches.geometry\n"
        "print(sorted(m for m in ('torch', 'torchvision', 'transformers') if m in sys.modules))\n"
        "print(sys.meta_path == before)\n")
    assert out.split("\n")[:2] == ["[]", "True"]
