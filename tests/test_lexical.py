import numpy as np
import pytest
from PIL import Image

from snappy.patches import geometry
from snappy.encoders import lexical
from snappy.encoders.lexical import (LexicalEncoder, LexicalOptions, normalize_piece, query_pieces, qwen_like_grid,
                                     text_pieces, word_boxes)
from snappy.regions.propagation import RegionOverlap, patch_scores, region_scores, select_regions
from snappy.regions.region import Region, box_areas, boxes_array
from snappy.errors import QueryError
from snappy.search.query import check_query

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


def test_grid_is_the_qwen_grid_of_geometry():
    """One geometry: the lexical grid is geometry.qwen_grid (transformers' smart_resize), thin pages too."""
    o = LexicalOptions()
    for size in [(1700, 2200), (800, 600), (30, 40), (5, 948), (948, 5), (14, 855), (3000, 100)]:
        want = geometry.qwen_grid(size, min_pixels=4 * 28 * 28, max_pixels=768 * 28 * 28, family="lexical")
        assert qwen_like_grid(size, o) == want, size
    assert qwen_like_grid((5, 948), o).shape == (28, 1)  # the old re-implementation said 34 x 1
    with pytest.raises(ValueError, match="aspect ratio"):  # ColQwen cannot take it either
        qwen_like_grid((2, 1000), o)


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
    assert enc.embed_queries(["what is the glacier"])[0].shape == (1, 128)  # else dropped


SYMBOLS = "TO: Café_Menus  ﬁles CAFE\u0301S 1,000 Straße"


def test_page_and_query_text_are_normalised_by_one_function():
    """The pieces a page's words get are the pieces the same text gets as a query."""
    want = ["to", "cafe", "menu", "file", "cafe", "1", "000", "strasse"]
    assert text_pieces(SYMBOLS) == want
    _, page_pieces = word_boxes([Region((0, 0, 400, 20), (500, 50), SYMBOLS)])
    assert page_pieces == want  # stop words ("to") included: pages keep them
    assert query_pieces(SYMBOLS) == [w for w in want if w != "to"]  # queries drop them ...
    assert query_pieces("TO:") == ["to"] and query_pieces("From") == ["from"]  # ... unless nothing else is left
    enc = LexicalEncoder()
    q = enc.embed_queries(["café menus"])[0]
    page = enc.embed_regions((500, 50), [Region((0, 0, 400, 20), (500, 50), "CAFE\u0301 MENU")]).vectors
    assert float((q @ page.astype(np.float32).T).max(1).sum()) > 1.8  # both words found


def _form():
    size = (850, 1100)
    texts = [((60, 100, 100, 125), "TO:"), ((130, 100, 400, 125), "Jane Doe, Harbor Office"),
             ((60, 160, 120, 185), "FROM:"), ((130, 160, 400, 185), "John Roe"),
             ((60, 400, 780, 425), "Please send the signed copy to the office by Friday"),
             ((60, 460, 780, 485), "Copies were sent from the archive on request")]
    return size, [Region(b, size, t) for b, t in texts]


@pytest.mark.parametrize("query, want", [("TO:", 0), ("FROM:", 2), ("to", 0), ("signed copy", 4)])
def test_stop_word_query_finds_its_form_label(query, want):
    """A query of stop words only ("TO:") ranks the patch and the region holding that label first."""
    size, regs = _form()
    enc = LexicalEncoder()
    emb = enc.embed_regions(size, regs)
    (q,) = enc.embed_queries([query])
    ps = patch_scores(q, emb.vectors)
    best = emb.grid.boxes()[int(np.argmax(ps))]
    x0, y0, x1, y1 = regs[want].bbox
    assert best[0] < x1 and best[2] > x0 and best[1] < y1 and best[3] > y0, (query, best)  # overlaps the label
    ov = RegionOverlap.build(emb.grid.boxes(), boxes_array(regs))
    assert select_regions(region_scores(ps, ov), "top1").tolist() == [want]


def test_stop_words_weigh_less_than_content_words_on_pages(monkeypatch):
    enc = LexicalEncoder()
    size = (850, 1100)
    # one short line inside one patch: "the" and "revenue" in the same patch vector
    (v,) = enc.embed_regions(size, [Region((2, 2, 30, 20), size, "the revenue")]).vectors[:1].astype(np.float32)
    rev, the = enc.embed_queries(["revenue", "the"])
    assert float(rev[0] @ v) > 0.9 > 0.5 > float(the[0] @ v) > 0.1  # content dominates, stop word still there
    monkeypatch.setattr(lexical, "STOPWORD_WEIGHT", 0.0)  # what v1 did: stop words dropped from pages
    _, regs = _form()
    emb = enc.embed_regions(size, regs)
    assert patch_scores(enc.embed_queries(["TO:"])[0], emb.vectors).max() < 0.5  # "TO:" matched hash noise only


@pytest.mark.parametrize("text", ["?!", "___", "-- ** --", "\u0301"])
def test_a_query_without_words_is_refused_with_a_reason(text):
    """Never a silent flat answer: check_query (CLI, API, service) and the encoder itself refuse it."""
    with pytest.raises(QueryError, match="no words to search after normalisation") as e:
        check_query(text)
    assert e.value.field == "query"
    with pytest.raises(QueryError, match="no words"):
        LexicalEncoder().embed_queries(["glacier", text])
    assert check_query(" TO: ") == "TO:"  # stop words are words


def test_cli_query_without_words_exits_2_with_the_reason(tmp_path):
    from typer.testing import CliRunner

    from pipelines.cli import app

    r = CliRunner().invoke(app, ["query", str(tmp_path / "idx"), "___"])
    assert r.exit_code == 2 and "no words to search" in r.output, r.output


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


def test_encoder_id_carries_the_version():
    enc = LexicalEncoder()
    assert enc.encoder_id == f"lexical:d128:p28:t768:h8:s0:v{lexical.VERSION}" and lexical.VERSION >= 2
    with pytest.raises(ValueError, match="version 1 is not available"):
        LexicalOptions(version=1)


def test_box_areas():
    np.testing.assert_allclose(box_areas([[0, 0, 2, 3], [1, 1, 1, 5]]), [6, 0])
    assert box_areas(np.zeros((0, 4))).shape == (0,) and box_areas([[0, 0, 2, 2]], np.float32).dtype == np.float32


def test_make_encoder_round_trips_the_stored_id():
    from snappy.encoders import make_encoder

    enc = make_encoder("lexical", dim=64, seed=3)
    again = make_encoder(enc.encoder_id)
    assert again.options == enc.options and again.encoder_id == enc.encoder_id
    with pytest.raises(ValueError, match="bad lexical encoder id"):
        make_encoder("lexical:zz")


def test_query_tokens_are_the_pieces_in_order():
    from snappy.encoders.lexical import LexicalEncoder

    enc = LexicalEncoder()
    labels = enc.query_tokens("How much Cardamom, in kg?")
    assert len(labels) == len(enc.embed_queries(["How much Cardamom, in kg?"])[0])
    assert "cardamom" in labels and labels == enc.pieces("How much Cardamom, in kg?")
