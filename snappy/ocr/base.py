"""The OCR engine interface."""
from __future__ import annotations

from abc import ABC, abstractmethod

from PIL import Image

from snappy.regions import Region


class OcrEngine(ABC):
    """Turns a page image into text regions (boxes in that image's pixels)."""

    name: str

    @abstractmethod
    def recognize(self, image: Image.Image) -> list[Region]:
        """Regions in reading order, boxes in pixels of ``image`` (top-left origin)."""

    def __call__(self, image: Image.Image) -> list[Region]:
        return self.recognize(image)
