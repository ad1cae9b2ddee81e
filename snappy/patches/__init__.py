"""The model's patch grid on the page: the page rectangle of each patch token, per model family.

- :mod:`~snappy.patches.grid` :class:`PatchGrid` (blocks of a uniform grid, JSON round trip);
- :mod:`~snappy.patches.geometry` the exact resize/tiling of each ColPali family's processor.
"""
from snappy.patches.geometry import grid_for
from snappy.patches.grid import GridBlock, PatchGrid

__all__ = ["GridBlock", "PatchGrid", "grid_for"]
