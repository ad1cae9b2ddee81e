"""snappy.patches.geometry against the real processors (transformers + colpali-engine code paths).

Every family's grid is checked against what the processor really emits for a batch of pages
of many sizes: the image-token count in ``input_ids``, the processor's own tile/patch layout
(``image_grid_thw`` / the ``<row_r_col_c>`` tile tokens), and the pixel content of ``pixel_values`` per
token against the page rectangle the grid assigns to that token (so a transposed grid, a
wrong tile order or an off-by-one tile count fails).
"""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from snappy import ensure_torchvision_importable
from snappy.encoders.tiny import build_tiny_processor
from snappy.patches import geometry
from snappy.patches.grid import GridBlock, PatchGrid

ensure_torchvision_importable()  # CPU torch beside a CUDA torchvision: transformers imports it

PAGE_SIZES = [
    (595, 842), (1240, 1754),  # A4 at 72 and 150 dpi
    (612, 792), (1700, 2200),  # Letter at 72 and 200 dpi
    (2200, 1700), (842, 595), (2200, 1400),  # landscape
    (100, 3000), (3000, 100),  # extreme aspect ratios
    (30, 40), (40, 30),  # tiny
    (1000, 1000), (451, 449),  # square / near square
]
# colmodernvbert shares ColSmol's image processor; its own processor class is checked in
# test_idefics3_counts_other_configs (fewer pages keep the suite fast).
FAMILIES = ["colqwen2.5", "colqwen2", "colqwen3", "colpali", "colidefics3", "colsmol"]


def smooth_page(w: int, h: int, seed: int) -> Image.Image:
    """A grey page with a low-frequency random pattern (so resampling details do not matter)."""
    rng = np.random.default_rng(seed)
    low = (rng.random((5, 4)) * 255).astype(np.uint8)  # [rows, cols]
    return Image.fromarray(low, "L").resize((w, h), Image.BILINEAR).convert("RGB")


def page_values(page: Image.Image, grid: PatchGrid) -> np.ndarray:
    """Mean grey value of the page over each token box (centre sample for sub-pixel boxes)."""
    a = np.asarray(page.convert("L"), dtype=np.float64)
    h, w = a.shape
    ii = np.zeros((h + 1, w + 1))
    ii[1:, 1:] = a.cumsum(0).cumsum(1)  # integral image
    b = grid.boxes()  # [n, 4]
    cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    x0 = np.clip(np.round(b[:, 0]), 0, w - 1).astype(int)
    y0 = np.clip(np.round(b[:, 1]), 0, h - 1).astype(int)
    x1 = np.maximum(np.clip(np.round(b[:, 2]), 0, w).astype(int), x0 + 1)
    y1 = np.maximum(np.clip(np.round(b[:, 3]), 0, h).astype(int), y0 + 1)
    s = ii[y1, x1] - ii[y0, x1] - ii[y1, x0] + ii[y0, x0]
    mean = s / ((x1 - x0) * (y1 - y0))
    small = ((b[:, 2] - b[:, 0]) < 2) | ((b[:, 3] - b[:, 1]) < 2)
    centre = a[np.clip(cy.astype(int), 0, h - 1), np.clip(cx.astype(int), 0, w - 1)]
    return np.where(small, centre, mean)


def token_values(batch, i: int, kind: str, grid: PatchGrid, processor) -> np.ndarray:
    """Mean normalised pixel value of each image token of page ``i``, in token order."""
    pv = batch["pixel_values"][i].float().numpy()
    if kind == "qwen":
        thw = batch["image_grid_thw"][i].tolist()
        m2 = processor.image_processor.merge_size ** 2
        n = thw[0] * thw[1] * thw[2]  # patches; m*m consecutive patches form one token
        return pv[:n].reshape(n // m2, -1).mean(1)
    if kind == "paligemma":
        k = grid.blocks[0].rows
        c, hh, ww = pv.shape
        return pv.mean(0).reshape(k, hh // k, k, ww // k).mean((1, 3)).reshape(-1)
    out = []  # idefics3: frames = tiles (row-major) then the global tile
    for f, block in enumerate(grid.blocks):
        fr = pv[f].mean(0)  # [T, T]
        n, t = block.rows, fr.shape[0]
        out.append(fr.reshape(n, t // n, n, t // n).mean((1, 3)).reshape(-1))
    return np.concatenate(out)


def row_col_tokens(proc, input_ids) -> list[tuple[int, int]]:
    """(rows, cols) of tiles per page, read from the ``<row_r_col_c>`` tokens in input_ids."""
    ids = {proc.tokenizer.convert_tokens_to_ids(f"<row_{r}_col_{c}>"): (r, c) for r in range(1, 7) for c in range(1, 7)}
    out = []
    for row in input_ids.tolist():
        rc = [ids[t] for t in row if t in ids]
        out.append((max(r for r, _ in rc), max(c for _, c in rc)) if rc else (0, 0))
    return out


def corr(a: np.ndarray, b: np.ndarray) -> float:
    if a.std() == 0 or b.std() == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


@pytest.fixture(scope="module", params=FAMILIES)
def processed(request):
    """(family, processor, pages, batch, grids) for one processor call over all page sizes."""
    fam = request.param
    proc = build_tiny_processor(fam)
    pages = [smooth_page(w, h, seed=k) for k, (w, h) in enumerate(PAGE_SIZES)]
    batch = proc.process_images(pages)
    grids = [geometry.grid_for(proc, p.size, family=fam) for p in pages]
    return fam, proc, pages, batch, grids


def test_token_count_matches_input_ids(processed):
    fam, proc, pages, batch, grids = processed
    counts = (batch["input_ids"] == proc.image_token_id).sum(1).tolist()
    assert [g.n_tokens for g in grids] == counts, fam
    for g, p in zip(grids, pages):
        assert g.family == fam and g.page_size == p.size
        assert g.boxes().shape == (g.n_tokens, 4)


def test_layout_matches_processor(processed):
    """Rows/cols (not just their product) equal the processor's own layout."""
    fam, proc, pages, batch, grids = processed
    kind = geometry.geometry_kind(proc)
    if kind == "qwen":
        m = proc.image_processor.merge_size
        for g, thw in zip(grids, batch["image_grid_thw"].tolist()):
            assert g.shape == (thw[1] // m, thw[2] // m)
            assert g.model_size == (thw[2] * proc.image_processor.patch_size, thw[1] * proc.image_processor.patch_size)
    elif kind == "idefics3":
        n = int(round(proc.image_seq_len ** 0.5))
        for g, p, (rows, cols) in zip(grids, pages, row_col_tokens(proc, batch["input_ids"])):
            assert len(g.blocks) == (rows * cols + 1 if rows else 1), p.size
            assert all((b.rows, b.cols) == (n, n) for b in g.blocks)
            if rows:
                assert g.model_size == (cols * proc.image_processor.max_image_size["longest_edge"],
                                        rows * proc.image_processor.max_image_size["longest_edge"])
                tiles = geometry.idefics3_tiles(p.size, **{k: v for k, v in geometry.idefics3_params(proc).items()
                                                           if k in ("longest_edge", "tile", "do_resize")})
                assert tiles == (rows, cols)
    else:
        assert all(g.shape == (32, 32) and g.model_size == (448, 448) for g in grids)


def test_pixel_content_per_token_matches_page_rectangle(processed):
    """What the processor puts into token k is what the grid says token k covers."""
    fam, proc, pages, batch, grids = processed
    kind = geometry.geometry_kind(proc)
    for i, (page, g) in enumerate(zip(pages, grids)):
        tv = token_values(batch, i, kind, g, proc)
        pvals = page_values(page, g)
        c = corr(tv, pvals)
        assert c > 0.97, (fam, page.size, c)
        # A transposed single-block grid (same token count) must not fit as well.
        b0 = g.blocks[0]
        if len(g.blocks) == 1 and b0.rows != b0.cols:
            wrong = PatchGrid(g.family, g.page_size, (GridBlock(b0.cols, b0.rows, b0.x0, b0.y0, b0.x1, b0.y1),))
            assert corr(tv, page_values(page, wrong)) < c - 0.2, (fam, page.size)


def test_idefics3_tile_order_and_count_are_checked(processed):
    """Column-major tiles or a tile grid off by one column do not match the pixels."""
    fam, proc, pages, batch, grids = processed
    if geometry.geometry_kind(proc) != "idefics3":
        pytest.skip("tiles only in Idefics3-style models")
    i = PAGE_SIZES.index((2200, 1400))  # 3 x 4 tiles in all three configurations
    page, g = pages[i], grids[i]
    tv = token_values(batch, i, "idefics3", g, proc)
    tiles = g.blocks[:-1]
    cols = round(g.page_size[0] / (tiles[0].x1 - tiles[0].x0))
    rows = len(tiles) // cols
    assert rows != cols
    col_major = tuple(tiles[r * cols + c] for c in range(cols) for r in range(rows)) + (g.blocks[-1],)
    good = corr(tv, page_values(page, g))
    assert corr(tv, page_values(page, PatchGrid(g.family, g.page_size, col_major))) < good - 0.2
    # one tile column fewer: stretch rows x (cols-1) tiles over the page (same tokens up to the cut)
    w, h = g.page_size
    tw, th = w / (cols - 1), h / rows
    n_side = tiles[0].rows
    fewer = [GridBlock(n_side, n_side, c * tw, r * th, (c + 1) * tw, (r + 1) * th)
             for r in range(rows) for c in range(cols - 1)]
    fewer_grid = PatchGrid(g.family, g.page_size, tuple(fewer))
    n = fewer_grid.n_tokens
    assert corr(tv[:n], page_values(page, fewer_grid)) < corr(tv[:n], page_values(page, g)[:n]) - 0.2


@pytest.mark.parametrize("fam", ["colqwen2.5", "colpali", "colsmol"])
def test_dark_corner_maps_to_corner_tokens(fam):
    """A page white except its top-right corner: exactly the tokens there are dark."""
    proc = build_tiny_processor(fam)
    w, h = 1275, 1650
    page = Image.new("RGB", (w, h), "white")
    page.paste((0, 0, 0), (int(w * 0.75), 0, w, int(h * 0.25)))
    batch = proc.process_images([page])
    g = geometry.grid_for(proc, page.size, family=fam)
    tv = token_values(batch, 0, geometry.geometry_kind(proc), g, proc)
    dark_tokens = tv < (tv.max() + tv.min()) / 2
    b = g.boxes()
    cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    in_corner = (cx > w * 0.75) & (cy < h * 0.25)
    # tokens straddling the corner's edge may go either way
    straddle = (b[:, 2] > w * 0.75) & (b[:, 0] < w * 0.75) | (b[:, 3] > h * 0.25) & (b[:, 1] < h * 0.25)
    assert dark_tokens.any()
    assert np.array_equal(dark_tokens[~straddle], in_corner[~straddle])


def test_qwen_examples_at_768_tokens():
    """Documented examples (cols x rows = W'/28 x H'/28)."""
    kw = {"min_pixels": 4 * 28 * 28, "max_pixels": 768 * 28 * 28}
    g = geometry.qwen_grid((1700, 2200), **kw)
    assert g.model_size == (672, 868) and g.shape == (31, 24) and g.n_tokens == 744
    g = geometry.qwen_grid((800, 600), **kw)
    assert g.model_size == (812, 588) and g.shape == (21, 29) and g.n_tokens == 609
    # boxes: row-major, first token top-left, token 1 to its right
    b = g.boxes()
    assert np.allclose(b[0], [0, 0, 800 / 29, 600 / 21]) and np.allclose(b[1, 0], 800 / 29)
    assert np.allclose(b[29], [0, 600 / 21, 800 / 29, 1200 / 21])


def test_idefics3_rounds_up_to_whole_tiles():
    """1700x2200 at 1456/364: 4x4 tiles where colpali-engine's get_n_patches undercounts."""
    g = geometry.idefics3_grid((1700, 2200), longest_edge=1456, tile=364, tokens_per_tile=169)
    assert geometry.idefics3_tiles((1700, 2200), longest_edge=1456, tile=364) == (4, 4)
    assert g.n_tokens == 17 * 169 and g.model_size == (1456, 1456)
    proc = build_tiny_processor("colidefics3")
    nx, ny = proc.get_n_patches((1700, 2200), patch_size=364 // 13)
    assert (nx, ny) != (4 * 13, 4 * 13)  # the library helper is off; our grid matched the processor above


def test_grid_json_roundtrip_and_bad_sizes():
    g = geometry.idefics3_grid((2200, 1700), longest_edge=2048, tile=512, tokens_per_tile=64, family="colsmol")
    assert PatchGrid.from_json(g.to_json()) == g
    with pytest.raises(ValueError, match="page size"):
        geometry.qwen_grid((0, 10), min_pixels=3136, max_pixels=602112)
    with pytest.raises(ValueError, match="square"):
        geometry.paligemma_grid((10, 10), n_tokens=1000)


@pytest.mark.parametrize("fam,longest_edge", [("colsmol", 1100), ("colmodernvbert", 2048)])
def test_idefics3_counts_other_configs(fam, longest_edge):
    """ColModernVBert's processor; and a longest edge that is not a whole number of tiles, where
    rounding the long side up to whole tiles changes the short side's tile count too."""
    proc = build_tiny_processor(fam, size={"longest_edge": longest_edge})
    sizes = [(1700, 2200), (2200, 1700), (2200, 1400)]
    pages = [smooth_page(w, h, seed=k) for k, (w, h) in enumerate(sizes)]
    ids = proc.process_images(pages)["input_ids"]
    counts = (ids == proc.image_token_id).sum(1).tolist()
    for p, n, rc in zip(pages, counts, row_col_tokens(proc, ids)):
        g = geometry.grid_for(proc, p.size, family=fam)
        assert g.n_tokens == n, (p.size, longest_edge)
        assert geometry.idefics3_tiles(p.size, longest_edge=longest_edge, tile=512) == rc


def smart_resize_sizes(n: int = 10_000, seed: int = 0) -> list[tuple[int, int]]:
    """~20,000 (width, height): page-like sizes, and thin ones (a side of 1-60 px), both ways round."""
    rng = np.random.default_rng(seed)
    pages = rng.integers(100, 5001, size=(n, 2))
    short, long_ = rng.integers(1, 61, size=n), rng.integers(1, 8001, size=n)
    flip = rng.random(n) < 0.5
    thin = np.stack([np.where(flip, long_, short), np.where(flip, short, long_)], axis=1)
    fixed = [(5, 948), (948, 5), (14, 855), (13, 861), (1, 1), (1, 200), (1, 201), (28, 28)]
    return fixed + [tuple(map(int, s)) for s in np.concatenate([pages, thin])]


@pytest.mark.parametrize("factor,min_pixels,max_pixels", [
    (28, 4 * 28 * 28, 768 * 28 * 28),  # the lexical encoder's defaults, ColQwen2.5's token cap
    (28, 56 * 56, 28 * 28 * 1280),  # transformers' Qwen2-VL defaults
    (32, 3136, 1003520),  # a patch-16 (Qwen3-VL-like) factor
])
def test_smart_resize_is_transformers_own(factor, min_pixels, max_pixels):
    """geometry.smart_resize (what qwen_grid and the lexical grid use) equals transformers' on
    every size, thin ones included, and refuses the same sizes (aspect ratio over 200)."""
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize as hf_smart_resize

    def outcome(fn, w, h):
        try:
            return fn(h, w, factor=factor, min_pixels=min_pixels, max_pixels=max_pixels)
        except ValueError as e:
            return ("ValueError", str(e))

    sizes = smart_resize_sizes()
    assert len(sizes) > 20_000 and sum(min(s) < 28 for s in sizes) > 4000
    bad = [(s, ours, theirs) for s in sizes
           if (ours := outcome(geometry.smart_resize, *s)) != (theirs := outcome(hf_smart_resize, *s))]
    assert not bad, bad[:5]
    refused = sum(outcome(geometry.smart_resize, *s)[0] == "ValueError" for s in sizes)
    assert 0 < refused < len(sizes) // 4  # both branches exercised
    assert geometry.smart_resize(948, 5, factor=28, min_pixels=3136, max_pixels=768 * 784) == (784, 28)
