"""Decoupled video segmentation: image segmentation + class-agnostic temporal propagation."""

__version__ = "0.1.0"
