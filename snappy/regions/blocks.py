"""Block regions: OCR lines grouped into the units people ask about, and the level a query returns.

OCR engines give lines; evidence is often a paragraph, a label with its value, a multi-line address
or a caption, and just as often one field of a form or one line of a receipt. :func:`group_lines`
groups line boxes geometrically (all pairwise tests vectorised, no model). Detector boxes carry
padding that varies with the word's length, so the tests use centre-to-centre pitch and overlaps,
not the gaps between boxes:

0. **Cells.** A line is a cell when another line shares its row (vertical overlap at least
   ``min_y_overlap`` of the smaller height) across a gap at least ``cell_gap`` times the wider of
   the two: table cells, form labels and values. Columns of running text are not cells (their
   lines are much wider than the gutter).
1. **Stacks.** A line joins the nearest line below it when the two overlap horizontally (by at
   least ``min_x_overlap`` of the narrower one), have heights within ``max_height_ratio``, their
   centres are at most ``max_pitch`` times the page's median line height apart and at most
   ``pitch_tol`` times the page's typical line pitch (a paragraph break adds half a line or
   more), they are not both cells (a table's rows do not stack into columns), not both numbers
   (a receipt's price column is not a paragraph), and the lower line does not both start and end
   ``indent`` median heights right of the upper one (a short last line, then an indented first
   line: paragraphs set without a gap between them).
2. **Rows.** A single-line stack joins its right neighbour in the row only when the two read as
   one phrase (a gap up to ``phrase_gap`` line heights: a line the detector split) or as a label
   ending in a colon and its value. Other cells of a row stay apart: a form row's several fields,
   table cells, a receipt item and its price.

Limits: a table whose row pitch is as tight as body text stacks by column instead of by row;
rotated and overlapping lines are grouped by their axis-aligned boxes.

:func:`with_blocks` appends the blocks to a page's lines with parent links (the stored form);
:func:`select_level` chooses what a query returns: ``line``, ``block`` (block boxes scored by
propagation like lines) or ``auto`` (per block, the block, its lines, or the block and its best
line, from how the evidence spreads over it; scale-aware scores).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from typing import Literal, Sequence

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from snappy.regions.propagation import DEFAULT_THRESHOLD, Selection, Threshold, select
from snappy.regions.region import Region

RegionLevel = Literal["line", "block", "auto"]
REGION_LEVELS: tuple[str, ...] = ("line", "block", "auto")
DEFAULT_LEVEL: RegionLevel = "auto"  # the level chosen per page and query: docs/regions.md


@dataclass(frozen=True)
class BlockOptions:
    max_pitch: float = 1.35  # centre-to-centre distance / the page's median line height, within a stack
    pitch_tol: float = 1.3  # centre-to-centre distance / the page's typical line pitch, within a stack
    cell_gap: float = 0.5  # horizontal gap / wider line, between the cells of a row
    min_x_overlap: float = 0.3  # horizontal overlap / narrower line, within a stack
    max_height_ratio: float = 1.6  # taller / shorter line height, within a stack
    min_y_overlap: float = 0.5  # vertical overlap / smaller height, within a row
    phrase_gap: float = 1.2  # horizontal gap / line height up to which row neighbours read as one phrase
    indent: float = 1.0  # a line starting and ending this many median heights right of the one above opens a paragraph
    block_ratio: float = 0.95  # auto: a block whose lead over the page mean is >= this x its best line's: whole
    line_ratio: float = 0.6  # auto: below this x its best line's lead, a block answers with its lines
    shrink: float = 0.5  # auto: a region of a patches' area keeps a/(a+shrink) of its lead over the page mean
    support: float = 0.35  # auto: two or more lines with this share of the best line's lead: block and line too


_NUMERIC = re.compile(r"^[\W\d_]*\d[\W\d_]*$")  # digits with punctuation/currency only: "80.90", "$1,200"
_KEY = re.compile(r"[:：]\s*$")  # a label: "Phone:", "Fax :"


def _text_flags(texts: Sequence[str] | None, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``(numeric, key)`` per line: numbers only (a value column), a label ending in a colon."""
    if texts is None:
        return np.zeros(n, bool), np.zeros(n, bool)
    t = [str(x or "").strip() for x in texts]
    return (np.fromiter((bool(_NUMERIC.match(x)) for x in t), bool, n),
            np.fromiter((bool(_KEY.search(x)) for x in t), bool, n))


def _components(n: int, pairs_a: np.ndarray, pairs_b: np.ndarray) -> np.ndarray:
    """Connected-component label per node of the graph with edges ``pairs_a[k] - pairs_b[k]``."""
    graph = sp.coo_matrix((np.ones(len(pairs_a)), (pairs_a, pairs_b)), shape=(n, n))
    return connected_components(graph, directed=False)[1].astype(np.int64)


def group_lines(boxes: np.ndarray, options: BlockOptions | None = None,
                texts: Sequence[str] | None = None) -> np.ndarray:
    """Block label ``[L]`` (0..B-1, blocks in reading order: top to bottom, then left to right)
    of each line box ``[L, 4]`` (page pixels, x0 y0 x1 y1); ``texts`` (the lines' texts, optional)
    tell numbers and ``label:`` keys apart."""
    o = options or BlockOptions()
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    n = len(b)
    if n == 0:
        return np.zeros(0, np.int64)
    numeric, key = _text_flags(texts, n)
    x0, y0, x1, y1 = b.T
    h = np.maximum(y1 - y0, 1e-6)
    w = np.maximum(x1 - x0, 1e-6)
    hmin = np.minimum(h[:, None], h[None, :])  # [L, L]
    x_ov = np.minimum(x1[:, None], x1[None, :]) - np.maximum(x0[:, None], x0[None, :])
    y_ov = np.minimum(y1[:, None], y1[None, :]) - np.maximum(y0[:, None], y0[None, :])
    cy = (y0 + y1) / 2
    pitch = cy[None, :] - cy[:, None]  # [i, j]: how far j's centre is below i's
    row = y_ov >= o.min_y_overlap * hmin
    np.fill_diagonal(row, False)
    h_gap = -x_ov  # > 0: the horizontal gap between two lines
    cell = (row & (h_gap >= o.cell_gap * np.maximum(w[:, None], w[None, :]))).any(axis=1)
    indent = o.indent * max(float(np.median(h)), 1e-6)
    # 1. stacks: i joins the nearest line below it that passes the tests; two numbers never stack
    stackable = ((pitch > 0) & ~row
                 & (x_ov >= o.min_x_overlap * np.minimum(w[:, None], w[None, :]))
                 & (np.maximum(h[:, None], h[None, :]) <= o.max_height_ratio * hmin)
                 & (pitch <= o.max_pitch * max(float(np.median(h)), 1e-6))
                 & ~(cell[:, None] & cell[None, :])
                 & ~(numeric[:, None] & numeric[None, :])
                 & ~((x0[None, :] - x0[:, None] >= indent) & (x1[None, :] - x1[:, None] >= indent)))
    dist = np.where(stackable, pitch, np.inf)
    nearest_pitch = dist.min(axis=1)
    if np.isfinite(nearest_pitch).any():
        typical = float(np.median(nearest_pitch[np.isfinite(nearest_pitch)]))
        dist[dist > o.pitch_tol * typical] = np.inf
    nearest = dist.argmin(axis=1)
    has = np.isfinite(dist[np.arange(n), nearest])
    src = np.flatnonzero(has)
    dst = nearest[has]
    stack = _components(n, src, dst)
    # 2. rows: single-line stacks next to each other in a row join when they read as one phrase
    #    (a gap of about a word space) or as a "label:" and the value right of it; other cells of a
    #    row (table cells, a form row's several fields, a receipt's item and price) stay apart
    sizes = np.bincount(stack)
    single = sizes[stack] == 1
    gap = np.where(row & (h_gap > -0.5 * hmin), h_gap, np.inf)  # side by side, barely overlapping at most
    right = np.where(x0[None, :] > x0[:, None], gap, np.inf)  # [i, j]: j right of i
    nb = right.argmin(axis=1)  # i's nearest neighbour to the right in its row
    ok = np.isfinite(right[np.arange(n), nb]) & single & single[nb]
    g = right[np.arange(n), nb]
    hrow = np.maximum(h, h[nb])
    phrase = g <= o.phrase_gap * hrow
    pair = key & ~key[nb]
    join = ok & (phrase | pair)
    ra, rb = np.flatnonzero(join), nb[join]
    labels = _components(n, np.concatenate([src, ra]), np.concatenate([dst, rb]))
    # reading order: by each block's top, then left
    k = labels.max() + 1
    top = np.full(k, np.inf)
    left = np.full(k, np.inf)
    np.minimum.at(top, labels, y0)
    np.minimum.at(left, labels, x0)
    order = np.lexsort((left, np.round(top, 1)))
    rank = np.empty(k, np.int64)
    rank[order] = np.arange(k)
    return rank[labels]


def blocks_from_lines(lines: Sequence[Region], options: BlockOptions | None = None
                      ) -> tuple[list[Region], np.ndarray]:
    """Block regions (level ``block``, in reading order) and each line's block index ``[L]``.

    A block's box is the union of its lines' boxes; its text is its lines' texts in reading order
    (rows left to right, stacks top to bottom); its confidence the lowest of its lines'."""
    lines = list(lines)
    if not lines:
        return [], np.zeros(0, np.int64)
    boxes = np.asarray([r.bbox for r in lines], np.float64)
    labels = group_lines(boxes, options, [r.text for r in lines])
    blocks = []
    for k in range(int(labels.max()) + 1):
        idx = np.flatnonzero(labels == k)
        idx = idx[np.lexsort((boxes[idx, 0], np.round((boxes[idx, 1] + boxes[idx, 3]) / 2, 0)))]
        bb = boxes[idx]
        blocks.append(Region(bbox=(bb[:, 0].min(), bb[:, 1].min(), bb[:, 2].max(), bb[:, 3].max()),
                             page_size=lines[0].page_size, text=" ".join(lines[i].text for i in idx if lines[i].text),
                             confidence=min(lines[i].confidence for i in idx), level="block",
                             source="pdf" if all(lines[i].source == "pdf" for i in idx) else "ocr"))
    return blocks, labels


def with_blocks(lines: Sequence[Region], options: BlockOptions | None = None
                ) -> tuple[list[Region], np.ndarray]:
    """The page's regions as stored: its lines, then its blocks of two or more lines; ``parent[i]``
    is the row of line ``i``'s block, -1 for a line that is a block by itself and for block rows
    (so a lone line is stored once, and pages stored before blocks read the same way)."""
    lines = [r for r in lines if r.level != "block"]
    blocks, labels = blocks_from_lines(lines, options)
    multi = np.bincount(labels, minlength=len(blocks)) >= 2 if len(lines) else np.zeros(0, bool)
    row = np.full(len(blocks), -1, np.int64)
    row[multi] = len(lines) + np.arange(int(multi.sum()))
    parent = np.concatenate([row[labels] if len(lines) else np.zeros(0, np.int64),
                             np.full(int(multi.sum()), -1, np.int64)])
    return lines + [b for b, m in zip(blocks, multi) if m], parent


@dataclass(frozen=True)
class PageLevels:
    """What level selection needs of one page's stored regions, computed once per page:
    row indices of its lines and blocks, each line's block (position in ``block_rows``; -1 for a
    line that is a block by itself), per block its line count, the rows of the block level (stored
    blocks and the lines that are blocks by themselves), every row's box area and the page's patch
    area (px^2; 0: unknown)."""

    line_rows: np.ndarray
    block_rows: np.ndarray
    line_block: np.ndarray
    block_lines: np.ndarray
    unit_rows: np.ndarray
    row_area: np.ndarray | None = None
    patch_area: float = 0.0

    @classmethod
    def build(cls, levels: Sequence[str] | np.ndarray, parent: np.ndarray | None,
              areas: np.ndarray | None = None, patch_area: float | None = None) -> "PageLevels":
        line_rows, block_rows, line_block = split_levels(levels, parent)
        has = line_block >= 0
        return cls(line_rows, block_rows, line_block, np.bincount(line_block[has], minlength=len(block_rows)),
                   np.sort(np.concatenate([block_rows, line_rows[~has]])),
                   None if areas is None else np.asarray(areas, np.float64), float(patch_area or 0.0))

    @cached_property
    def grouped(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(member, starts, seg, lone)``: positions in ``line_rows`` of the lines of blocks, grouped
        by block; where each block's run starts; each entry's block; the rows of lines of no block."""
        member = np.flatnonzero(self.line_block >= 0)
        member = member[np.argsort(self.line_block[member], kind="stable")]
        starts = np.concatenate([[0], np.cumsum(self.block_lines)[:-1]]).astype(np.int64)
        seg = np.repeat(np.arange(len(self.block_rows)), self.block_lines)
        return member, starts, seg, self.line_rows[self.line_block < 0]


def split_levels(levels: Sequence[str] | np.ndarray, parent: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(line_rows, block_rows, line_block)`` of a page's stored regions: row indices of lines and
    blocks, and for each line the position of its block in ``block_rows`` (-1 when the page was
    stored without blocks: every line is then its own block)."""
    lv = np.asarray(levels, dtype=object)
    is_block = lv == "block"
    line_rows, block_rows = np.flatnonzero(~is_block), np.flatnonzero(is_block)
    line_block = np.full(len(line_rows), -1, np.int64)
    if parent is not None and len(block_rows):
        pos = np.full(len(lv), -1, np.int64)
        pos[block_rows] = np.arange(len(block_rows))
        p = np.asarray(parent, np.int64)[line_rows]
        ok = (p >= 0) & (p < len(lv))
        line_block[ok] = pos[p[ok]]
    return line_rows, block_rows, line_block


def select_level(scores: np.ndarray, levels, parent: np.ndarray | None = None, areas: np.ndarray | None = None,
                 threshold="p50", level: str = DEFAULT_LEVEL, options: BlockOptions | None = None,
                 patch_area: float | None = None):
    """The rows a query returns from one page's stored regions (lines, then blocks), best first.

    ``scores`` ``[N]`` are the rows' propagated scores; ``levels`` is the rows' level column (with
    ``parent``, ``areas`` and the page's ``patch_area``, the stored columns) or a :class:`PageLevels`
    built from them once. ``line``: the threshold applied to the lines. ``block``: applied to the
    blocks (stored blocks and the lines that are blocks by themselves). ``auto``: the level is
    chosen per block from the evidence (:func:`_auto_units`), then the threshold is applied to the
    chosen units. A page stored without blocks answers every level with lines."""
    if level not in REGION_LEVELS:
        raise ValueError(f"unknown region level {level!r}; expected one of {', '.join(REGION_LEVELS)}")
    pl = levels if isinstance(levels, PageLevels) else PageLevels.build(levels, parent, areas, patch_area)
    s = np.asarray(scores)
    if level == "block":
        sel = select(s[pl.unit_rows], threshold)
        return Selection(pl.unit_rows[sel.kept], sel.peak, sel.reason)
    if level == "line" or not len(pl.block_rows):
        sel = select(s[pl.line_rows], threshold)
        return Selection(pl.line_rows[sel.kept], sel.peak, sel.reason)
    units, adj, companion = _auto_units(s, pl, options or BlockOptions())
    sel = select(adj, threshold)
    kept = units[sel.kept]
    c = companion[kept]
    if (c >= 0).any():  # a block kept "with its best line" comes with it, right after it
        kept = np.stack([kept, c], axis=1).ravel()
        kept = kept[kept >= 0]
    return Selection(kept, sel.peak, sel.reason)


def _auto_units(s: np.ndarray, pl: PageLevels, o: BlockOptions) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The rows ``auto`` chooses among, their scale-aware scores, and per row the block returned
    with it (-1: none).

    Scores are shrunk towards the page's mean line score by ``a / (a + shrink)``, ``a`` the region's
    area in patches: a region smaller than a patch shares that patch's score with its neighbours,
    so a page number or a 3-character fragment in a relevant patch does not outrank the paragraph
    around it. Then per block of two or more lines, its lead over the mean against its best line's:
    at least ``block_ratio``, the evidence covers the block (a paragraph, an address): the block;
    below ``line_ratio``, it sits on some of its lines (a value beside its label, one line of a
    paragraph): those lines; in between (or when two or more of its lines carry ``support`` of the
    best one's lead), its lines, and the block returned with its best line whenever that line is
    kept. Lines of no block are units."""
    lines, nb = pl.line_rows, len(pl.block_rows)
    v = s[lines]
    ok = ~np.isnan(v)
    mu = float(v[ok].mean()) if ok.any() else 0.0
    adj = np.asarray(s, np.float64)
    if pl.patch_area > 0 and pl.row_area is not None:
        a = pl.row_area / pl.patch_area
        adj = mu + (adj - mu) * (a / (a + o.shrink))
    lead = adj - mu
    lead[np.isnan(lead)] = -np.inf
    member, starts, seg, lone = pl.grouped  # lines grouped by block: per-block reductions over runs
    ml = lead[lines[member]]
    best = np.maximum.reduceat(ml, starts) if nb else np.zeros(0)
    blead = lead[pl.block_rows]
    ratio = np.where(best > 0, blead / np.where(best > 0, best, 1.0), 1.0)
    whole = ratio >= o.block_ratio
    strong = (ml > 0) & (ml >= o.support * best[seg])
    both = ~whole & ((ratio >= o.line_ratio) | (np.add.reduceat(strong, starts) >= 2 if nb else False))
    pos = np.arange(len(member))
    first = np.minimum.reduceat(np.where(ml >= best[seg], pos, len(member)), starts) if nb else pos
    keep = ~whole[seg] & (~both[seg] | (pos == first[seg]))  # member lines that are units
    units = np.sort(np.concatenate([lone, lines[member[keep]], pl.block_rows[whole]]))
    companion = np.full(len(s), -1, np.int64)
    companion[lines[member[first[both]]]] = pl.block_rows[both]
    return units, adj[units], companion


DEFAULT_SELECTION = "default"  # the spec naming what `snappy query` does by default


def parse_selection(spec: str, default_level: str = "line") -> tuple[str, Threshold]:
    """A selection spec ``[level:]rule`` -> ``(level, Threshold)``: ``auto:p50``, ``block:top3``,
    ``gap`` (no level: ``default_level``, lines, as in the paper); ``default``: the level and rule
    `snappy query`, the service and ``Searcher`` use by default. ValueError names what is wrong."""
    text = str(spec).strip()
    if text.lower() == DEFAULT_SELECTION:
        return DEFAULT_LEVEL, Threshold.parse(DEFAULT_THRESHOLD)
    head, _, rest = text.partition(":")
    if head.lower() in REGION_LEVELS and rest:
        return head.lower(), Threshold.parse(rest)
    return default_level, Threshold.parse(text)
