"""Block regions: OCR lines grouped into the units people ask about, and the level a query returns.

OCR engines give lines; evidence is often a paragraph, a table row, a label with its value, a
multi-line address or a caption. :func:`group_lines` groups line boxes geometrically (all pairwise
tests vectorised, no model). Detector boxes carry padding that varies with the word's length, so
the tests use centre-to-centre pitch and overlaps, not the gaps between boxes:

0. **Cells.** A line is a cell when another line shares its row (vertical overlap at least
   ``min_y_overlap`` of the smaller height) across a gap at least ``cell_gap`` times the wider of
   the two: table cells, form labels and values. Columns of running text are not cells (their
   lines are much wider than the gutter).
1. **Stacks.** A line joins the nearest line below it when the two overlap horizontally (by at
   least ``min_x_overlap`` of the narrower one), have heights within ``max_height_ratio``, their
   centres are at most ``max_pitch`` times the page's median line height apart (body text at
   1.2-1.3x leading: 0.9-1.15, whether the engine's boxes are ink-tight or padded; 1.9x leading:
   1.5-2.0, separate lines) and at most ``pitch_tol`` times the page's typical line pitch (the
   median over lines of the pitch to their nearest candidate below: a paragraph break adds half
   a line or more), and they are not both cells (a table's rows do not stack into columns).
   Headings are told from paragraphs by pitch: detectors give a 15 pt heading and 10 pt body text
   boxes of nearly the same height.
2. **Rows.** Single-line stacks that share a row join across any horizontal gap: table rows,
   "label: value" pairs, a header's left and right parts. Multi-line stacks never join sideways,
   so the columns of a two-column page stay apart.

Limits: a table whose row pitch is as tight as body text stacks by column instead of by row;
rotated and overlapping lines are grouped by their axis-aligned boxes.

:func:`with_blocks` appends the blocks to a page's lines with parent links (the stored form);
:func:`select_level` chooses what a query returns: ``line``, ``block`` (block boxes scored by
propagation like lines) or ``auto`` (lines selected by the rule, each block whose selected lines
cover at least ``promote`` of its line area returned whole in their place).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from snappy.regions.propagation import Selection, Threshold, select
from snappy.regions.region import Region

RegionLevel = Literal["line", "block", "auto"]
REGION_LEVELS: tuple[str, ...] = ("line", "block", "auto")
DEFAULT_LEVEL: RegionLevel = "block"  # measured best for a RAG user: docs/eval.md


@dataclass(frozen=True)
class BlockOptions:
    max_pitch: float = 1.35  # centre-to-centre distance / the page's median line height, within a stack
    pitch_tol: float = 1.3  # centre-to-centre distance / the page's typical line pitch, within a stack
    cell_gap: float = 0.5  # horizontal gap / wider line, between the cells of a row
    min_x_overlap: float = 0.3  # horizontal overlap / narrower line, within a stack
    max_height_ratio: float = 1.6  # taller / shorter line height, within a stack
    min_y_overlap: float = 0.5  # vertical overlap / smaller height, within a row
    promote: float = 0.5  # auto level: selected share of a block's line area that returns the block


def _components(n: int, pairs_a: np.ndarray, pairs_b: np.ndarray) -> np.ndarray:
    """Connected-component label per node of the graph with edges ``pairs_a[k] - pairs_b[k]``."""
    graph = sp.coo_matrix((np.ones(len(pairs_a)), (pairs_a, pairs_b)), shape=(n, n))
    return connected_components(graph, directed=False)[1].astype(np.int64)


def group_lines(boxes: np.ndarray, options: BlockOptions | None = None) -> np.ndarray:
    """Block label ``[L]`` (0..B-1, blocks in reading order: top to bottom, then left to right)
    of each line box ``[L, 4]`` (page pixels, x0 y0 x1 y1)."""
    o = options or BlockOptions()
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    n = len(b)
    if n == 0:
        return np.zeros(0, np.int64)
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
    # 1. stacks: i joins the nearest line below it that passes the tests
    stackable = ((pitch > 0) & ~row
                 & (x_ov >= o.min_x_overlap * np.minimum(w[:, None], w[None, :]))
                 & (np.maximum(h[:, None], h[None, :]) <= o.max_height_ratio * hmin)
                 & (pitch <= o.max_pitch * max(float(np.median(h)), 1e-6))
                 & ~(cell[:, None] & cell[None, :]))
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
    # 2. rows: single-line stacks sharing a row
    sizes = np.bincount(stack)
    single = sizes[stack] == 1
    same_row = row & single[:, None] & single[None, :]
    ra, rb = np.nonzero(np.triu(same_row))
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
    labels = group_lines(boxes, options)
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
    line that is a block by itself), line areas, per block its line count and line area, and the
    rows of the block level (stored blocks and the lines that are blocks by themselves)."""

    line_rows: np.ndarray
    block_rows: np.ndarray
    line_block: np.ndarray
    line_area: np.ndarray
    block_lines: np.ndarray
    block_area: np.ndarray
    unit_rows: np.ndarray

    @classmethod
    def build(cls, levels: Sequence[str] | np.ndarray, parent: np.ndarray | None,
              areas: np.ndarray | None = None) -> "PageLevels":
        line_rows, block_rows, line_block = split_levels(levels, parent)
        a = (np.ones(len(levels)) if areas is None else np.asarray(areas, np.float64))[line_rows]
        has = line_block >= 0
        nb = len(block_rows)
        return cls(line_rows, block_rows, line_block, a, np.bincount(line_block[has], minlength=nb),
                   np.bincount(line_block[has], weights=a[has], minlength=nb),
                   np.sort(np.concatenate([block_rows, line_rows[~has]])))


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
                 threshold="p50", level: str = DEFAULT_LEVEL, promote: float = BlockOptions.promote):
    """The rows a query returns from one page's stored regions (lines, then blocks), best first.

    ``scores`` ``[N]`` are the rows' propagated scores; ``levels`` is the rows' level column (with
    ``parent`` and ``areas``, the stored columns) or a :class:`PageLevels` built from them once.
    ``line``: the threshold applied to the lines. ``block``: applied to the blocks (stored blocks and
    the lines that are blocks by themselves). ``auto``: the threshold applied to the lines, then every
    block of two or more lines whose selected lines cover at least ``promote`` of its line area is
    returned whole, in place of those lines, at the rank of its best selected line. The
    :class:`~snappy.regions.propagation.Selection`'s ``peak`` and ``reason`` are those of the lines' map."""
    if level not in REGION_LEVELS:
        raise ValueError(f"unknown region level {level!r}; expected one of {', '.join(REGION_LEVELS)}")
    pl = levels if isinstance(levels, PageLevels) else PageLevels.build(levels, parent, areas)
    s = np.asarray(scores)
    if level == "block":
        sel = select(s[pl.unit_rows], threshold)
        return Selection(pl.unit_rows[sel.kept], sel.peak, sel.reason)
    sel = select(s[pl.line_rows], threshold)
    kept_lines = pl.line_rows[sel.kept]
    if level == "line" or not len(pl.block_rows) or not len(kept_lines):
        return Selection(kept_lines, sel.peak, sel.reason)
    kb = pl.line_block[sel.kept]
    kh = kb >= 0
    kept_area = np.bincount(kb[kh], weights=pl.line_area[sel.kept][kh], minlength=len(pl.block_rows))
    promoted = (pl.block_lines >= 2) & (kept_area > 0) & (kept_area >= promote * pl.block_area)
    if not promoted.any():
        return Selection(kept_lines, sel.peak, sel.reason)
    out = kept_lines.copy()
    swap = kh.copy()
    swap[kh] = promoted[kb[kh]]
    out[swap] = pl.block_rows[kb[swap]]
    _, first = np.unique(out, return_index=True)  # a promoted block once, at its best line's rank
    return Selection(out[np.sort(first)], sel.peak, sel.reason)


def parse_selection(spec: str, default_level: str = "line") -> tuple[str, Threshold]:
    """A selection spec ``[level:]rule`` -> ``(level, Threshold)``: ``auto:p50``, ``block:top3``,
    ``gap`` (no level: ``default_level``, lines, as in the paper). ValueError names what is wrong."""
    text = str(spec).strip()
    head, _, rest = text.partition(":")
    if head.lower() in REGION_LEVELS and rest:
        return head.lower(), Threshold.parse(rest)
    return default_level, Threshold.parse(text)
