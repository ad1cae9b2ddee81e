import numpy as np
import pytest
from PIL import Image

from snappy.encoders.lexical import LexicalEncoder, LexicalOptions, normalize_piece, qwen_like_grid, word_boxes
from snappy.propagation import RegionOverlap, patch_scores, region_scores, select_regions
from snappy.regions import Region, boxes_array

SIZE = (850, 1100)


def _regions():
    lines = ["The quarterly revenue grew strongly", "Glacier retreat was measured by drones",
             "Nothing relevant appears on this line", "Saffron prices doubled in Valencia"]
    return [Region((60, 100 + 150 * i, 700, 130 + 150 * i), SIZE, t) for i, t in enumerate(lines)]


def test_grid_like_qwen_smart_resize():
    g = qwen_like_grid((1700, 2200), LexicalOptions())
    assert g.model_size == (672, 868) and g.shape == (31, 24) and g.n_tokens == 744
    g = qwen_like_grid((800, 600), LexicalOptions())
    assert g.model_size == (812, 588) and g.shape == (21, 29)
    assert qwen_like_grid((30, 40), LexicalOptions()).n_tokens >= 4


def test_vectors_unit_norm_where_text_and_zero_elsewhere():
    enc = LexicalEncoder()
    (emb,) = enc.embed_pages([Image.new("RGB", SIZE)], [_regions()])
    v = emb.vectors.astype(np.float32)
    assert v.shape == (emb.grid.n_tokens, 128) and emb.vectors.dtype == np.float16
    norms = np.linalg.norm(v, axis=1)
    covered = RegionOverlap.build(emb.grid.boxes(), boxes_array(_regions())).inter.sum(axis=0).A1 > 0
    assert np.all(norms[~covered] == 0)  # no text, no vector
    text = norms > 0
    assert np.allclose(norms[text], 1, atol=1e-2) and text.sum() >= 0.8 * covered.sum()


def test_same_word_matches_other_words_do_not():
    enc = LexicalEncoder()
    a, b, c = enc.embed_queries(["glacier", "glaciers", "volcano"])
    assert a @ b.T == pytest.approx(1.0)  # plural folded
    assert abs(float(a @ c.T)) < 0.5
    assert enc.embed_queries(["what is the"])[0].shape == (3, 128)  # all stopwords: kept


def test_query_words_land_on_their_region():
    enc = LexicalEncoder()
    regs = _regions()
    emb = enc.embed_regions(SIZE, regs)
    ov = RegionOverlap.build(emb.grid.boxes(), boxes_array(regs))
    for query, want in [("glacier drones", 1), ("saffron valencia", 3), ("revenue", 0)]:
        (q,) = enc.embed_queries([query])
        scores = region_scores(patch_scores(q, emb.vectors), ov)
        assert select_regions(scores, "top1")[0] == want


def test_word_boxes_split_lines_by_character_offsets():
    boxes, pieces = word_boxes([Region((0, 0, 100, 10), (200, 20), "ab cd")])
    assert pieces == ["ab", "cd"]
    np.testing.assert_allclose(boxes, [[0, 0, 40, 10], [60, 0, 100, 10]])


def test_needs_regions_and_deterministic():
    with pytest.raises(ValueError, match="regions"):
        LexicalEncoder().embed_pages([Image.new("RGB", SIZE)])
    e1 = LexicalEncoder().embed_regions(SIZE, _regions()).vectors
    e2 = LexicalEncoder().embed_regions(SIZE, _regions()).vectors
    assert np.array_equal(e1, e2)
    e3 = LexicalEncoder(LexicalOptions(seed=1)).embed_regions(SIZE, _regions()).vectors
    assert not np.array_equal(e1, e3)
    assert normalize_piece("Café") == "cafe"


def test_make_encoder_round_trips_the_stored_id():
    from snappy.encoders import make_encoder

    enc = make_encoder("lexical", dim=64, seed=3)
    again = make_encoder(enc.encoder_id)
    assert again.options == enc.options and again.encoder_id == enc.encoder_id
    with pytest.raises(ValueError, match="bad lexical encoder id"):
        make_encoder("lexical:zz")
