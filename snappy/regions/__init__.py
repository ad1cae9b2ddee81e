"""Regions of text on a page and the paper's patch -> region relevance propagation.

- :mod:`~snappy.regions.region` :class:`Region`, a box of text in page pixels;
- :mod:`~snappy.regions.propagation` overlaps with the patch grid, region weights and scores,
  selection rules (the paper);
- :mod:`~snappy.regions.blocks` lines grouped into blocks, and the level a query returns.
"""
from snappy.regions.blocks import DEFAULT_LEVEL, REGION_LEVELS, group_lines, select_level, with_blocks
from snappy.regions.propagation import (DEFAULT_METHOD, DEFAULT_THRESHOLD, METHODS, RegionOverlap, Threshold,
                                        patch_scores, region_scores, select_regions)
from snappy.regions.region import Region, boxes_array

__all__ = ["DEFAULT_LEVEL", "DEFAULT_METHOD", "DEFAULT_THRESHOLD", "METHODS", "REGION_LEVELS", "Region",
           "RegionOverlap", "Threshold", "boxes_array", "group_lines", "patch_scores", "region_scores",
           "select_level", "select_regions", "with_blocks"]
