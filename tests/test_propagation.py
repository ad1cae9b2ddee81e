import numpy as np
import pytest

from snappy.patches.grid import PatchGrid
from snappy.regions.propagation import (
    RegionOverlap, Threshold, intersection_matrix, patch_scores, region_scores, select_regions,
)


def reference_iou_scores(patch_boxes, region_boxes, s):
    """The paper's formula, one region and one patch at a time."""
    out = []
    for r in region_boxes:
        num = den = 0.0
        for p, sp in zip(patch_boxes, s):
            iw = min(r[2], p[2]) - max(r[0], p[0])
            ih = min(r[3], p[3]) - max(r[1], p[1])
            if iw <= 0 or ih <= 0:
                continue
            inter = iw * ih
            iou = inter / ((r[2] - r[0]) * (r[3] - r[1]) + (p[2] - p[0]) * (p[3] - p[1]) - inter)
            num += iou * sp
            den += iou
        out.append(num / den if den else np.nan)
    return np.array(out)


@pytest.fixture
def page():
    rng = np.random.default_rng(0)
    grid = PatchGrid.uniform("t", (700, 900), rows=9, cols=7)  # 100 px patches
    x0 = rng.uniform(0, 600, 40)
    y0 = rng.uniform(0, 800, 40)
    regions = np.stack([x0, y0, x0 + rng.uniform(5, 300, 40), y0 + rng.uniform(5, 90, 40)], 1)
    regions = np.clip(regions, 0, [700, 900, 700, 900])
    return grid, regions, rng.normal(size=grid.n_tokens).astype(np.float32)


def test_iou_scores_match_the_paper_formula(page):
    grid, regions, s = page
    ov = RegionOverlap.build(grid.boxes(), regions)
    np.testing.assert_allclose(region_scores(s, ov, "iou"), reference_iou_scores(grid.boxes(), regions, s), rtol=1e-5)


def test_max_mean_ior_methods(page):
    grid, regions, s = page
    ov = RegionOverlap.build(grid.boxes(), regions)
    inter = intersection_matrix(regions, grid.boxes()).toarray()
    for i in range(len(regions)):
        hit = inter[i] > 0
        assert region_scores(s, ov, "max")[i] == pytest.approx(s[hit].max())
        assert region_scores(s, ov, "mean")[i] == pytest.approx(s[hit].mean(), rel=1e-5)
        w = inter[i] / ((regions[i, 2] - regions[i, 0]) * (regions[i, 3] - regions[i, 1]))
        assert region_scores(s, ov, "ior")[i] == pytest.approx((w * s).sum() / w.sum(), rel=1e-5)


def test_intersection_areas_are_exact():
    inter = intersection_matrix([[50, 50, 150, 100]], PatchGrid.uniform("t", (200, 200), 2, 2).boxes()).toarray()
    # region spans patches 0 and 1 (top row), 50x50 in each
    np.testing.assert_array_equal(inter, [[2500, 2500, 0, 0]])


def test_region_outside_every_patch_scores_nan_and_is_never_kept():
    grid = PatchGrid.uniform("t", (100, 100), 2, 2)
    ov = RegionOverlap.build(grid.boxes(), [[10, 10, 40, 40], [60, 60, 60, 60]])  # 2nd has zero area
    sc = region_scores(np.array([1, 2, 3, 4], np.float32), ov)
    assert sc[0] == 1 and np.isnan(sc[1])
    assert list(select_regions(sc, "0.0")) == [0]


def test_stored_rows_round_trip(page):
    """What indexing stores (region_table) and what the searcher rebuilds from it score alike."""
    from snappy.indexing.records import region_table
    from snappy.regions.region import Region
    from snappy.search.region_rows import overlap_from_table

    grid, regions, s = page
    rows = region_table("d", 1, [Region(tuple(b), (700, 900), f"r{i}") for i, b in enumerate(regions)], grid,
                        blocks=False)
    back = overlap_from_table(rows, grid)
    np.testing.assert_allclose(region_scores(s, back), region_scores(s, RegionOverlap.build(grid.boxes(), regions)),
                               rtol=1e-5)


def test_patch_scores_reduce_over_query_tokens():
    q = np.array([[1, 0], [0, 1]], np.float32)
    d = np.array([[0.5, 0.2], [0.1, 0.9], [0.3, 0.3]], np.float32)
    np.testing.assert_allclose(patch_scores(q, d, "max"), [0.5, 0.9, 0.3])
    np.testing.assert_allclose(patch_scores(q, d, "mean"), [0.35, 0.5, 0.3])
    np.testing.assert_allclose(patch_scores(q, d, "sum"), [0.7, 1.0, 0.6])


@pytest.mark.parametrize("spec,kind,value", [
    ("p50", "percentile", 50), ("P75.5", "percentile", 75.5), ("adaptive", "adaptive", 1.0),
    ("adaptive:0.5", "adaptive", 0.5), ("top3", "top", 3), ("0.4", "fixed", 0.4), (0.2, "fixed", 0.2),
])
def test_threshold_parse(spec, kind, value):
    th = Threshold.parse(spec)
    assert (th.kind, th.value) == (kind, value)
    assert Threshold.parse(str(th)) == th


@pytest.mark.parametrize("bad", ["p", "p101", "topx", "median", ""])
def test_threshold_parse_rejects(bad):
    with pytest.raises(ValueError, match="threshold"):
        Threshold.parse(bad)


def test_selection_rules_best_first():
    s = np.array([0.1, 0.9, 0.5, 0.7, 0.3, np.nan])
    assert list(select_regions(s, "top2")) == [1, 3]
    assert list(select_regions(s, "p50")) == [1, 3, 2]
    assert list(select_regions(s, "0.6")) == [1, 3]
    assert list(select_regions(s, "adaptive:1")) == [1]  # mean 0.5 + std 0.283


@pytest.mark.parametrize("spec", ["p50", "p90", "adaptive", "adaptive:0", "top3"])
def test_flat_map_selects_nothing(spec):
    assert select_regions(np.full(10, 0.42), spec).size == 0


def test_ties_do_not_blow_the_budget():
    s = np.array([1.0, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2])
    assert list(select_regions(s, "p50")) == [0]  # >= median would keep all 8
    assert list(select_regions(s, "top3")) == [0]  # 3rd place is a 7-way tie
    assert list(select_regions(np.array([3.0, 2.0, 2.0, 1.0]), "top2")) == [0]
    assert list(select_regions(np.array([3.0, 2.0, 1.0, 1.0]), "top2")) == [0, 1]


@pytest.mark.parametrize("spec", ["p50", "adaptive", "top1", "top3", "gap", "gap:0.1"])
def test_a_lone_region_is_kept_by_relative_rules(spec):
    assert list(select_regions(np.array([0.3]), spec)) == [0]
