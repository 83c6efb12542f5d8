"""deva.segmenters: the ImageSegmenter protocol and its adapters."""

from deva.segmenters.base import ImageSegmenter
from deva.segmenters.precomputed import BurstSegmenter, PrecomputedSegmenter, VipsegSegmenter

__all__ = ["BurstSegmenter", "ImageSegmenter", "PrecomputedSegmenter", "VipsegSegmenter"]
