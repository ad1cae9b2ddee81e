"""Block regions (snappy.regions.blocks), tie-safe selection and the level a query returns."""
from __future__ import annotations

import numpy as np
import pytest

from snappy.regions.blocks import PageLevels, blocks_from_lines, group_lines, select_level, split_levels, with_blocks
from snappy.regions.propagation import Threshold, select, select_regions
from snappy.regions.region import Region
from snappy.testing.synth import BLOCK_LAYOUTS, block_pages

DPI = 150.0


def _truth_lines(page):
    """The page's lines as an OCR engine with perfect boxes would give them, and their block ids."""
    size = (round(page.size_pt[0] * DPI / 72), round(page.size_pt[1] * DPI / 72))
    regions = [Region(ln.bbox_px(DPI), size, ln.text) for ln in page.lines]
    return regions, [ln.group for ln in page.lines]


@pytest.mark.parametrize("layout", BLOCK_LAYOUTS)
def test_grouping_recovers_every_asked_block(layout):
    pages, questions = block_pages(len(BLOCK_LAYOUTS) * 2, seed=3)
    checked = 0
    for p, page in enumerate(pages):
        if BLOCK_LAYOUTS[p % len(BLOCK_LAYOUTS)] != layout:
            continue
        lines, groups = _truth_lines(page)
        labels = group_lines(np.array([r.bbox for r in lines]), texts=[r.text for r in lines])
        for q in (q for q in questions if q.page == p):
            members = [i for i, g in enumerate(groups) if g == q.block]
            if q.kind == "table_row":  # a table's cells stay units of their own: no row, no column
                assert len(set(labels[members])) == len(members), f"row {q.block} joined its cells"
                assert all((labels == labels[i]).sum() == 1 for i in members), f"row {q.block}: a cell stacked"
                checked += 1
                continue
            block = set(labels[members])
            assert len(block) == 1, f"{layout}: block {q.block} split into {block}"
            others = [i for i in range(len(lines)) if labels[i] in block and groups[i] != q.block]
            assert not others, f"{layout}: block {q.block} swallowed {[lines[i].text for i in others]}"
            checked += 1
    assert checked >= 2


def test_blocks_have_union_boxes_reading_order_text_and_parents():
    size = (1000, 1400)
    lines = [Region((50, 40, 400, 70), size, "A Heading"),  # taller: its own block
             Region((50, 100, 900, 120), size, "para one"), Region((50, 126, 900, 146), size, "para two"),
             Region((50, 152, 500, 172), size, "para three"),
             Region((400, 220, 500, 240), size, "cell b"), Region((50, 220, 200, 240), size, "cell a"),
             Region((700, 220, 800, 240), size, "cell c"),
             Region((50, 340, 450, 360), size, "left 1"), Region((50, 366, 450, 386), size, "left 2"),
             Region((520, 340, 900, 360), size, "right 1"), Region((520, 366, 900, 386), size, "right 2")]
    blocks, labels = blocks_from_lines(lines)
    assert [b.text for b in blocks] == ["A Heading", "para one para two para three", "cell a", "cell b", "cell c",
                                        "left 1 left 2", "right 1 right 2"]
    assert blocks[1].bbox == (50, 100, 900, 172) and all(b.level == "block" for b in blocks)
    stored, parent = with_blocks(lines)  # blocks of two or more lines are stored; the heading is one line
    assert len(stored) == len(lines) + 3 and list(parent[len(lines):]) == [-1] * 3 and parent[0] == -1
    assert [stored[p].text for p in parent[1:4]] == ["para one para two para three"] * 3
    assert list(parent[4:7]) == [-1] * 3  # cells of a row are lines by themselves
    line_rows, block_rows, line_block = split_levels([r.level for r in stored], parent)
    assert list(line_rows) == list(range(len(lines))) and list(line_block[:4]) == [-1, 0, 0, 0]
    pl = PageLevels.build([r.level for r in stored], parent, [r.area for r in stored])
    assert list(pl.unit_rows) == [0, 4, 5, 6] + list(range(len(lines), len(lines) + 3))  # the block level's rows


# ------------------------------------------------------------------ grouping cases (forms, receipts, tables)

SIZE = (1200, 1600)


def _labels(rows):
    """Block labels of ``(box, text)`` lines, and a lookup: text -> set of texts in its block."""
    boxes = np.array([b for b, _ in rows], float)
    texts = [t for _, t in rows]
    lab = group_lines(boxes, texts=texts)
    return {t: {u for u, m in zip(texts, lab) if m == lab[i]} for i, t in enumerate(texts)}


def test_a_form_row_keeps_its_fields_apart_and_pairs_each_label_with_its_value():
    # "FAX NUMBER: ...  PHONE NUMBER: ..." on one row, a plain two-cell row under it
    g = _labels([((50, 100, 230, 122), "FAX NUMBER:"), ((250, 100, 420, 122), "(212) 555-0198"),
                 ((620, 100, 830, 122), "PHONE NUMBER:"), ((850, 100, 1020, 122), "(212) 555-0142"),
                 ((50, 160, 150, 182), "DATE"), ((400, 160, 560, 182), "12 March 1998")])
    assert g["FAX NUMBER:"] == {"FAX NUMBER:", "(212) 555-0198"}  # a key/value pair
    assert g["PHONE NUMBER:"] == {"PHONE NUMBER:", "(212) 555-0142"}  # the row's other field stays apart
    assert g["DATE"] == {"DATE"} and g["12 March 1998"] == {"12 March 1998"}  # no colon, far apart: two cells


def test_a_line_split_by_the_detector_reads_as_one_phrase():
    g = _labels([((50, 100, 300, 122), "Total amount due"), ((318, 100, 420, 122), "this month")])
    assert g["Total amount due"] == {"Total amount due", "this month"}


def test_key_value_pair_block_and_its_value_line_are_both_answers():
    size = (1000, 1400)
    lines = [Region((50, 100, 160, 120), size, "Fax:"), Region((300, 100, 480, 120), size, "555 0142"),
             Region((50, 300, 900, 320), size, "body one"), Region((50, 326, 900, 346), size, "body two")]
    stored, parent = with_blocks(lines)
    assert [r.text for r in stored[4:]] == ["Fax: 555 0142", "body one body two"]
    pl = PageLevels.build([r.level for r in stored], parent, [r.area for r in stored])
    # the evidence sits on the value: the value line, not the pair, is returned (with the pair in between)
    scores = np.array([0.1, 0.9, 0.0, 0.0, 0.5, 0.0])
    assert list(select_level(scores, pl, threshold="gap", level="auto").kept) == [1]
    scores = np.array([0.8, 0.9, 0.0, 0.0, 0.85, 0.0])  # the question is about the pair: the pair
    assert 4 in select_level(scores, pl, threshold="gap", level="auto").kept


def test_a_receipt_price_column_is_not_stacked_but_item_lines_of_one_entry_are():
    rows = []
    for k, (item, price) in enumerate([("Chicken burger", "80.90"), ("Iced lemon tea", "100.00"),
                                       ("Service charge", "19.10")]):
        y = 200 + 30 * k
        rows += [((60, y, 300, y + 22), item), ((900, y, 990, y + 22), price)]
    g = _labels(rows)
    assert all(g[p] == {p} for p in ("80.90", "100.00", "19.10"))  # numbers never stack into a paragraph
    assert all(g[i] == {i} for i in ("Chicken burger", "Iced lemon tea"))  # an item and its price stay apart too


def test_a_numeric_table_column_is_not_a_paragraph():
    rows = [((500, 100 + 26 * k, 560, 120 + 26 * k), f"{k * 7.5:.2f}") for k in range(6)]
    g = _labels(rows)
    assert all(len(v) == 1 for v in g.values())


def test_a_multi_line_address_and_a_paragraph_still_group():
    g = _labels([((60, 100, 200, 122), "Mailing address:"),
                 ((400, 100, 640, 122), "221 Baker Street"), ((400, 128, 600, 150), "London NW1 6XE"),
                 ((400, 156, 620, 178), "United Kingdom"),
                 ((60, 300, 1100, 322), "The committee met on Tuesday to review the"),
                 ((60, 328, 1100, 350), "budget for the coming year and approved the"),
                 ((60, 356, 700, 378), "proposal without amendment.")])
    assert g["221 Baker Street"] == {"221 Baker Street", "London NW1 6XE", "United Kingdom"}
    assert len(g["proposal without amendment."]) == 3


def test_table_rows_keep_their_cells_apart():
    rows = []
    for r in range(5):
        y = 200 + 40 * r
        rows += [((60, y, 180, y + 20), f"Item{r}"), ((400, y, 470, y + 20), f"{r * 13}"),
                 ((700, y, 760, y + 20), f"{r * 7}.5")]
    lab = group_lines(np.array([b for b, _ in rows], float), texts=[t for _, t in rows])
    assert len(set(lab.tolist())) == len(rows)


def test_grouping_of_nothing_and_of_one_line():
    assert group_lines(np.zeros((0, 4))).size == 0
    assert list(group_lines(np.array([[0, 0, 10, 5]]))) == [0]


# ------------------------------------------------------------------ selection


def test_ties_at_the_top_are_always_kept():
    assert list(select_regions(np.array([1.0, 2.0, 2.0, 2.0]), "p50")) == [1, 2, 3]  # was []
    assert list(select_regions(np.array([3.0, 3.0, 1.0, 0.0]), "top1")) == [0, 1]
    assert list(select_regions(np.array([0.0, 0.0, 0.0, 1.0]), "adaptive:2")) == [3]  # mean+2std > max
    for spec in ("p50", "p90", "top1", "adaptive:3", "gap"):
        sel = select(np.array([0.1, 0.5, 0.5, 0.2, 0.0]), spec)
        assert {1, 2} <= set(sel.kept.tolist()) and sel.reason is None


@pytest.mark.parametrize("spec", ["p50", "adaptive", "top1", "gap", "gap:0.2"])
def test_flat_map_selects_nothing_and_says_why(spec):
    sel = select(np.full(6, 0.3), spec)
    assert sel.kept.size == 0 and sel.reason == "flat" and sel.peak == 0.0
    assert select(np.full(0, 0.3), spec).reason == "no regions"
    assert select(np.array([np.nan, np.nan]), spec).reason == "no regions"


def test_fixed_threshold_reason_and_peak():
    sel = select(np.array([0.1, 0.2, 0.9]), "0.95")
    assert sel.kept.size == 0 and sel.reason == "below threshold" and sel.peak > 1
    peaked, spread = select(np.r_[1.0, np.zeros(20)], "p50"), select(np.linspace(0, 1, 21), "p50")
    assert peaked.peak > 4 > spread.peak  # a single standout region has a higher peak


def test_gap_rule_cuts_at_the_largest_drop():
    s = np.array([0.2, 0.91, 0.1, 0.9, 0.15, 0.88, 0.05, 0.12])
    assert list(select_regions(s, "gap")) == [1, 3, 5]
    assert list(select_regions(s, "gap:0.2")) == [1, 3]  # only the best 2 places are looked at
    assert Threshold.parse("gap") == Threshold("gap", 0.5) and Threshold.parse(str(Threshold("gap", 0.3))).value == 0.3
    with pytest.raises(ValueError, match="share"):
        Threshold.parse("gap:1.5")


def test_levels():
    size = (1000, 1400)
    lines = [Region((50, 100, 900, 120), size, "p1"), Region((50, 126, 900, 146), size, "p2"),
             Region((50, 152, 500, 172), size, "p3"),
             Region((50, 300, 900, 320), size, "q1"), Region((50, 326, 900, 346), size, "q2"),
             Region((50, 352, 900, 372), size, "q3"), Region((50, 378, 900, 398), size, "q4")]
    stored, parent = with_blocks(lines)
    levels = [r.level for r in stored]
    areas = np.array([r.area for r in stored])
    # lines 0, 1 of block "p" score high; line 3 of block "q" a little; blocks score like their lines
    scores = np.array([0.9, 0.8, 0.1, 0.5, 0.0, 0.0, 0.0, 0.6, 0.12])
    assert list(select_level(scores, levels, parent, areas, "top3", "line").kept) == [0, 1, 3]
    assert list(select_level(scores, levels, parent, areas, "top1", "block").kept) == [7]
    # a page stored without blocks: every level answers with lines
    assert list(select_level(scores[:7], levels[:7], None, areas[:7], "top2", "block").kept) == [0, 1]
    assert list(select_level(scores[:7], levels[:7], None, areas[:7], "top2", "auto").kept) == [0, 1]
    with pytest.raises(ValueError, match="level"):
        select_level(scores, levels, parent, areas, "top1", "page")


def _two_paragraphs():
    size = (1000, 1400)
    lines = [Region((50, 100 + 26 * k, 900, 120 + 26 * k), size, f"p{k}") for k in range(4)] + \
            [Region((50, 300 + 26 * k, 900, 320 + 26 * k), size, f"q{k}") for k in range(4)]
    stored, parent = with_blocks(lines)
    assert [r.level for r in stored[8:]] == ["block", "block"]
    return PageLevels.build([r.level for r in stored], parent, [r.area for r in stored])


def test_auto_returns_the_block_when_the_evidence_covers_it():
    pl = _two_paragraphs()
    scores = np.array([0.8, 0.82, 0.79, 0.81, 0.1, 0.1, 0.12, 0.1, 0.805, 0.105])
    assert list(select_level(scores, pl, threshold="gap", level="auto").kept) == [8]


def test_auto_returns_the_line_when_the_evidence_sits_on_one_line():
    pl = _two_paragraphs()
    scores = np.array([0.1, 0.1, 0.1, 0.1, 0.1, 0.9, 0.1, 0.1, 0.1, 0.3])
    assert list(select_level(scores, pl, threshold="gap", level="auto").kept) == [5]


def test_auto_returns_block_and_best_line_in_between():
    pl = _two_paragraphs()
    # two of four lines carry the evidence: the block's lead over the mean is 0.7 of its best line's
    scores = np.array([0.1, 0.1, 0.1, 0.1, 0.1, 0.9, 0.8, 0.4, 0.1, 0.73])
    kept = select_level(scores, pl, threshold="gap", level="auto").kept
    assert set(kept.tolist()) == {5, 9}


def test_auto_is_scale_aware_a_tiny_fragment_does_not_outrank_the_paragraph():
    size = (1000, 1400)
    lines = [Region((50, 100 + 26 * k, 900, 120 + 26 * k), size, f"p{k}") for k in range(3)] + \
            [Region((50, 400 + 26 * k, 900, 420 + 26 * k), size, f"q{k}") for k in range(6)] + \
            [Region((940, 1350, 960, 1365), size, "7")]  # a page number: a fraction of a patch
    stored, parent = with_blocks(lines)
    assert [r.text for r in stored[10:]] == ["p0 p1 p2", "q0 q1 q2 q3 q4 q5"]
    areas = [r.area for r in stored]
    scores = np.array([0.6, 0.62, 0.58] + [0.1] * 6 + [0.9] + [0.6, 0.1])  # the number sits in a hot patch
    plain = select_level(scores, [r.level for r in stored], parent, areas, "top1", "auto")
    assert list(plain.kept) == [9]  # without the patch size, raw scores rule
    pl = PageLevels.build([r.level for r in stored], parent, areas, patch_area=28 * 28)
    kept = select_level(scores, pl, threshold="top1", level="auto").kept.tolist()
    assert 9 not in kept and 10 in kept  # the paragraph (with its best line), not the page number


def test_selection_specs_name_a_level_and_a_rule():
    from snappy.regions.blocks import parse_selection

    assert parse_selection("p50") == ("line", Threshold("percentile", 50.0))  # the paper's setting
    assert parse_selection("auto:gap") == ("auto", Threshold("gap", 0.5))
    assert parse_selection("block:adaptive:1.5") == ("block", Threshold("adaptive", 1.5))
    assert parse_selection("adaptive:1.5") == ("line", Threshold("adaptive", 1.5))
    with pytest.raises(ValueError, match="threshold"):
        parse_selection("block:p500")


# ------------------------------------------------------------------ stored blocks


def test_an_index_written_before_blocks_is_migrated_and_answers_every_level(tmp_path, monkeypatch):
    import pyarrow as pa

    from snappy.indexing import records as rec
    from snappy.search import Searcher
    from snappy.storage import REGIONS
    from snappy.storage import schema as sch
    from snappy.testing.synth_index import SynthDocSpec, SynthPageSpec, write_index

    para = [((50, 100, 700, 120), "quarterly revenue grew"), ((50, 126, 700, 146), "by twelve percent in"),
            ((50, 152, 400, 172), "the northern region")]
    new_schema = sch.SCHEMAS[REGIONS]
    old_schema = lambda: pa.schema([f for f in new_schema() if f.name != "parent"])  # noqa: E731
    monkeypatch.setitem(sch.SCHEMAS, REGIONS, old_schema)
    monkeypatch.setattr(rec, "with_blocks", lambda lines: (list(lines), np.full(len(lines), -1)))
    store = write_index(str(tmp_path / "idx"), [SynthDocSpec("mem://old.pdf", [SynthPageSpec((800, 600), para)])])
    assert "parent" not in store.dataset(REGIONS).schema.names  # as snappy wrote it before blocks
    monkeypatch.undo()
    (page,) = Searcher(store.uri).query("revenue twelve", top_pages=1, threshold="top1", level="block")
    assert [r.level for r in page.regions] == ["line"]  # no blocks stored: the block level answers with lines
    write_index(str(tmp_path / "idx"), [SynthDocSpec("mem://new.pdf", [SynthPageSpec((800, 600), para)])])
    assert "parent" in store.dataset(REGIONS).schema.names  # added by the writer's migration
    pages = Searcher(store.uri).query("revenue twelve", top_pages=2, threshold="top1", level="block")
    by_uri = {p.uri: p for p in pages}
    assert [(r.level, r.text) for r in by_uri["mem://new.pdf"].regions] == [
        ("block", "quarterly revenue grew by twelve percent in the northern region")]


def test_paragraphs_set_without_a_gap_split_at_the_indent():
    rows = [((60, 100, 1100, 122), "The first paragraph runs across the whole"),
            ((60, 126, 1100, 148), "column and ends on a short"),
            ((60, 152, 500, 174), "last line."),
            ((110, 178, 1100, 200), "The second paragraph opens with an indent and"),
            ((60, 204, 1100, 226), "continues flush left.")]
    g = _labels(rows)
    assert g["last line."] == {r[1] for r in rows[:3]}
    assert g["continues flush left."] == {r[1] for r in rows[3:]}
