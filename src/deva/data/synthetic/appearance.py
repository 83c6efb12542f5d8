"""What the synthetic scene's objects and background look like, apart from how they move.

The generator asks an :class:`Appearance` for the background canvas and for each object's
sprite; motion, occlusion, camera and detections do not depend on it. The default,
:class:`ProceduralAppearance`, paints noise and pattern textures on geometric shapes;
:class:`deva.data.real_imagery.CutoutAppearance` puts real photo cut-outs over real
photographs, which gives the same dynamics with real appearance.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from deva.data.synthetic.textures import _shape_sprite, _texture


class Appearance(Protocol):
    """The looks of a synthetic scene (both methods draw only from ``rng``)."""

    def background(
        self, rng: np.random.Generator, layout: np.ndarray, short_side: int
    ) -> np.ndarray:
        """(H, W, 3) float32 canvas in [0, 255] for the (H, W) stuff-region ``layout``; the
        frames the camera cuts from it have ``short_side`` pixels on their shorter side."""
        ...

    def sprite(
        self, rng: np.random.Generator, shape: str, radius: float
    ) -> tuple[np.ndarray, np.ndarray, str]:
        """An object of about ``radius`` pixels: (S, S) float32 alpha in [0, 1], (S, S, 3)
        float32 texture in [0, 255] and what it is (recorded as the object's ``shape``).
        Its pixels lie within ``radius`` of the sprite's centre."""
        ...


class ProceduralAppearance:
    """Textured geometric shapes over a background of textured stuff regions."""

    def background(
        self, rng: np.random.Generator, layout: np.ndarray, short_side: int
    ) -> np.ndarray:
        height, width = layout.shape
        canvas = np.zeros((height, width, 3), dtype=np.float32)
        for region in range(1, int(layout.max()) + 1):
            inside = layout == region
            scale = rng.uniform(0.08, 0.25) * short_side
            canvas[inside] = _texture(rng, height, width, scale=scale)[inside]
        return canvas

    def sprite(
        self, rng: np.random.Generator, shape: str, radius: float
    ) -> tuple[np.ndarray, np.ndarray, str]:
        alpha = _shape_sprite(rng, shape, radius)
        size = alpha.shape[0]
        return alpha, _texture(rng, size, size, scale=max(radius * 0.8, 4.0)), shape
