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
