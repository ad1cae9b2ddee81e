"""make_encoder: CLI specs and the encoder_id an index stores both give back the same encoder."""
import numpy as np
import pytest

from snappy.encoders import NullEncoder, make_encoder


def test_null_encoder_round_trip():
    enc = make_encoder("null")
    assert isinstance(enc, NullEncoder) and make_encoder(enc.encoder_id).encoder_id == enc.encoder_id
    (emb,) = enc.embed_pages([__import__("PIL.Image", fromlist=["Image"]).new("RGB", (850, 1100))])
    assert emb.vectors.shape == (emb.grid.n_tokens, 128) and not emb.vectors.any()


def test_tiny_colqwen_stored_id_rebuilds_the_same_query_encoder(tmp_path, monkeypatch):
    monkeypatch.setenv("SNAPPY_CACHE", str(tmp_path))
    enc = make_encoder("tiny")
    assert enc.encoder_id.startswith("colpali:colqwen2.5:tiny-colqwen2.5-s0")
    again = make_encoder(enc.encoder_id)
    a, b = enc.embed_queries(["zephyr turbine"])[0], again.embed_queries(["zephyr turbine"])[0]
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_unknown_model_is_a_clear_error():
    with pytest.raises(ValueError, match="cannot tell the model family"):
        make_encoder("acme/unknown-model")
