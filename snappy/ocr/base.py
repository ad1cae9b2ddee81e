"""The OCR engine interface."""
from __future__ import annotations

from abc import ABC, abstractmethod

from PIL import Image

from snappy.regions.region import Region


class OcrEngine(ABC):
    """Turns a page image into text regions (boxes in that image's pixels)."""

    name: str

    @abstractmethod
    def recognize(self, image: Image.Image) -> list[Region]:
        """Regions in reading order, boxes in pixels of ``image`` (top-left origin)."""

    def read_lines(self, crops: list[Image.Image]) -> list[str]:
        """The text of each image, each a tight crop of one text line (an OCR-shaped line box).

        This default detects and recognises on the crop padded with white; engines whose
        recogniser reads a line crop directly override it (no detection: about half the cost)."""
        from PIL import ImageOps

        out = []
        for crop in crops:
            found = self.recognize(ImageOps.expand(crop.convert("RGB"), border=16, fill=(255, 255, 255)))
            out.append(" ".join(r.text for r in sorted(found, key=lambda r: r.bbox[0])))
        return out

    def __call__(self, image: Image.Image) -> list[Region]:
        return self.recognize(image)
