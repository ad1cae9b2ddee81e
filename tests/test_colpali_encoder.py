"""ColpaliEncoder on tiny random models built offline (no network, no real weights)."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
from PIL import Image, ImageDraw

from snappy._compat import ensure_torchvision_importable


def test_colpali_engine_imports_after_compat_fix():
    ensure_torchvision_importable()
    import colpali_engine
    import torchvision.transforms.functional  # noqa: F401  (its Python transforms must work)

    assert hasattr(colpali_engine, "ColQwen2_5") and hasattr(colpali_engine, "ColIdefics3")


ensure_torchvision_importable()

from snappy.encoders.colpali import ColpaliEncoder, ColpaliOptions, detect_family, resolve_model  # noqa: E402
from snappy.encoders.tiny import TINY_MARKER, build_tiny_model, tiny_model_dir  # noqa: E402

PAGES = [(300, 400), (500, 250), (120, 700)]  # differently sized pages -> padded batches


def page(w: int, h: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    for _ in range(6):
        x, y = int(rng.integers(0, w - 20)), int(rng.integers(0, h - 10))
        d.rectangle((x, y, x + int(rng.integers(10, w // 2)), y + 8), fill=tuple(int(v) for v in rng.integers(0, 200, 3)))
    return img


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("snappy-cache")


@pytest.fixture(scope="module", params=["colqwen2.5", "colqwen2", "colidefics3"])
def encoder(request, cache):
    return ColpaliEncoder.tiny(request.param, cache_dir=cache, batch_size=3)


def _digest(folder) -> tuple[str, str]:
    w = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    t = hashlib.sha256((folder / "tokenizer.json").read_bytes()).hexdigest()
    return w, t


def test_tiny_build_is_deterministic_and_reused(tmp_path):
    a = build_tiny_model("colqwen2.5", tmp_path / "a", seed=0)
    b = build_tiny_model("colqwen2.5", tmp_path / "b", seed=0)
    c = build_tiny_model("colqwen2.5", tmp_path / "c", seed=1)
    assert _digest(a) == _digest(b)
    assert _digest(a)[0] != _digest(c)[0] and _digest(a)[1] == _digest(c)[1]
    mtime = (a / "model.safetensors").stat().st_mtime_ns
    assert build_tiny_model("colqwen2.5", a, seed=0) == a  # complete folder: reused, not rebuilt
    assert (a / "model.safetensors").stat().st_mtime_ns == mtime
    assert (a / TINY_MARKER).is_file() and not list(tmp_path.glob(".a.*"))  # no temp folders left
    assert tiny_model_dir("colqwen2.5", 3, tmp_path).name.startswith("colqwen2.5-s3-")
    with pytest.raises(ValueError, match="no tiny model"):
        build_tiny_model("colpali", tmp_path / "p")


def test_embed_pages_batched_equals_single_and_matches_grid(encoder):
    pages = [page(w, h, k) for k, (w, h) in enumerate(PAGES)]
    batched = encoder.embed_pages(pages)  # one padded batch of 3
    singles = [encoder.embed_pages([p])[0] for p in pages]
    assert len(batched) == len(pages)
    for p, b, s in zip(pages, batched, singles):
        assert b.vectors.dtype == np.float16 and b.vectors.shape == (b.grid.n_tokens, 128)
        assert b.grid == encoder.grid_for(p.size) == s.grid and b.grid.page_size == p.size
        assert np.isfinite(b.vectors).all() and np.isfinite(s.vectors).all()
        np.testing.assert_allclose(b.vectors.astype(np.float32), s.vectors.astype(np.float32), atol=3e-3)
        norms = np.linalg.norm(b.vectors.astype(np.float32), axis=1)
        np.testing.assert_allclose(norms, 1.0, atol=1e-2)  # L2-normalised rows, no padding rows
    # different pages give different vectors (the model is really run on the pixels)
    assert not np.allclose(batched[0].vectors[:4], batched[1].vectors[:4])


def test_embed_queries_drops_padding_and_batches(encoder):
    texts = ["total amount due", "where is the signature on page two of the contract", "x"]
    batched = encoder.embed_queries(texts)
    singles = [encoder.embed_queries([t])[0] for t in texts]
    for b, s in zip(batched, singles):
        assert b.dtype == np.float32 and b.ndim == 2 and b.shape[1] == 128
        assert b.shape == s.shape and np.isfinite(b).all()
        np.testing.assert_allclose(b, s, atol=1e-4)
        np.testing.assert_allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-4)
    assert batched[1].shape[0] > batched[2].shape[0]


def test_encoder_settings_and_id(encoder):
    assert encoder.device.type == "cpu" and encoder.model.dtype.is_floating_point
    assert str(encoder.model.dtype) == "torch.float32"
    assert encoder.model.config._attn_implementation == "eager"
    assert encoder.encoder_id.startswith(f"colpali:{encoder.family}:tiny-{encoder.family}-s0-")
    assert encoder.model is encoder.model  # loaded once per instance


def test_max_num_visual_tokens_changes_geometry(cache):
    big = ColpaliEncoder.tiny("colqwen2.5", cache_dir=cache)
    small = ColpaliEncoder.tiny("colqwen2.5", cache_dir=cache, max_num_visual_tokens=64)
    assert big.encoder_id != small.encoder_id and "maxpx50176" in small.encoder_id
    p = page(900, 1200, 7)
    g = small.grid_for(p.size)
    assert g.n_tokens <= 64 < big.grid_for(p.size).n_tokens
    (emb,) = small.embed_pages([p])
    assert emb.vectors.shape == (g.n_tokens, 128)
    with pytest.raises(ValueError, match="Qwen"):
        ColpaliEncoder.tiny("colidefics3", cache_dir=cache, max_num_visual_tokens=64)


def test_family_detection_and_aliases(cache):
    assert detect_family("vidore/colqwen2.5-v0.2") == "colqwen2.5"
    assert detect_family("vidore/colqwen2-v1.0") == "colqwen2"
    assert detect_family("vidore/colpali-v1.3") == "colpali"
    assert detect_family("vidore/colSmol-256M") == "colsmol"
    assert detect_family("ModernVBERT/colmodernvbert") == "colmodernvbert"
    assert resolve_model("colqwen2.5") == "vidore/colqwen2.5-v0.2"
    assert ColpaliOptions().model == "vidore/colqwen2.5-v0.2"
    folder = build_tiny_model("colidefics3", tiny_model_dir("colidefics3", 0, cache))
    assert detect_family(str(folder)) == "colidefics3"
    (folder / TINY_MARKER).rename(folder / "marker.bak")  # falls back to config.json's model_type
    try:
        assert detect_family(str(folder)) == "colidefics3"
    finally:
        (folder / "marker.bak").rename(folder / TINY_MARKER)
    with pytest.raises(ValueError, match="family"):
        detect_family("someone/unknown-model")


def test_query_tokens_label_each_query_vector(encoder):
    """The similarity map's token labels (snappy serve): one per row embed_queries keeps, in order."""
    for text in ("total amount due", "where is the signature of the director?"):
        labels = encoder.query_tokens(text)
        assert len(labels) == len(encoder.embed_queries([text])[0])
        assert all(isinstance(t, str) and t for t in labels)
        assert text.replace(" ", "").rstrip("?") in "".join(labels).replace(" ", "")  # the query's own pieces
