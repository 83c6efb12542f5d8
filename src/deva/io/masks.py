"""Index and panoptic mask files: DAVIS palette PNGs and RGB-encoded id PNGs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from deva.io.atomic import atomic_path


def davis_palette() -> np.ndarray:
    """The DAVIS / PASCAL VOC colour map as a (256, 3) uint8 array (label i -> colour)."""
    palette = np.zeros((256, 3), dtype=np.uint8)
    for label in range(256):
        value, r, g, b = label, 0, 0, 0
        for bit in range(8):
            r |= ((value >> 0) & 1) << (7 - bit)
            g |= ((value >> 1) & 1) << (7 - bit)
            b |= ((value >> 2) & 1) << (7 - bit)
            value >>= 3
        palette[label] = (r, g, b)
    return palette


def write_index_png(path: str | Path, mask: np.ndarray) -> None:
    """Write an H×W integer mask with values in [0, 255] as a palette PNG (DAVIS colours)."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"index mask must be 2-D (H, W), got shape {mask.shape}")
    if mask.size and (mask.min() < 0 or mask.max() > 255):
        raise ValueError(
            f"index PNG holds ids 0..255, got range [{mask.min()}, {mask.max()}]; "
            "use write_id_png for more ids"
        )
    image = Image.fromarray(mask.astype(np.uint8), mode="P")
    image.putpalette(davis_palette().reshape(-1).tolist())
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temporary:
        image.save(temporary)


def read_index_png(path: str | Path) -> np.ndarray:
    """Read a palette or grey PNG as an H×W uint8 index mask (palette indices, not colours)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"mask file not found: {path}")
    try:
        with Image.open(path) as image:
            if image.mode in ("P", "L", "I", "I;16"):
                array = np.asarray(image)
            elif image.mode in ("RGB", "RGBA"):
                raise ValueError(
                    f"{path}: expected a palette or grey index PNG, got {image.mode}; "
                    "use read_id_png for RGB-encoded ids"
                )
            else:
                array = np.asarray(image.convert("L"))
    except OSError as error:
        raise ValueError(f"cannot read mask {path}: {error}") from error
    return array.astype(np.uint8) if array.max(initial=0) <= 255 else array.astype(np.int64)


def encode_rgb_ids(ids: np.ndarray) -> np.ndarray:
    """Encode an H×W id map as H×W×3 uint8 with id = R + 256·G + 256²·B."""
    ids = np.asarray(ids, dtype=np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= 256**3):
        raise ValueError(f"ids must lie in [0, 256^3), got [{ids.min()}, {ids.max()}]")
    return np.stack([ids % 256, (ids // 256) % 256, ids // 65536], axis=-1).astype(np.uint8)


def decode_rgb_ids(rgb: np.ndarray) -> np.ndarray:
    """Decode an H×W×3 RGB-encoded id image to an H×W int64 id map."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] < 3:
        raise ValueError(f"RGB id image must be (H, W, 3), got shape {rgb.shape}")
    rgb = rgb[..., :3].astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]


def write_id_png(path: str | Path, ids: np.ndarray) -> None:
    """Write an H×W id map of any size as an RGB-encoded PNG (id = R + 256·G + 256²·B)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temporary:
        Image.fromarray(encode_rgb_ids(ids), mode="RGB").save(temporary)


def read_id_png(path: str | Path) -> np.ndarray:
    """Read an RGB-encoded id PNG back to an H×W int64 id map."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"id mask file not found: {path}")
    try:
        with Image.open(path) as image:
            return decode_rgb_ids(np.asarray(image.convert("RGB")))
    except OSError as error:
        raise ValueError(f"cannot read id mask {path}: {error}") from error


def write_mask_png(path: str | Path, mask: np.ndarray) -> None:
    """Write an id mask as a palette PNG when all ids fit in 0..255, else as an RGB id PNG."""
    mask = np.asarray(mask)
    if mask.size and mask.max() > 255:
        write_id_png(path, mask)
    else:
        write_index_png(path, mask)


def read_mask_png(path: str | Path) -> np.ndarray:
    """Read either kind of mask PNG: palette / grey as indices, RGB as encoded ids (int64)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"mask file not found: {path}")
    try:
        with Image.open(path) as image:
            if image.mode in ("RGB", "RGBA"):
                return decode_rgb_ids(np.asarray(image.convert("RGB")))
    except OSError as error:
        raise ValueError(f"cannot read mask {path}: {error}") from error
    return read_index_png(path)


def id_colours(ids: np.ndarray) -> np.ndarray:
    """RGB colours (..., 3) uint8 for integer ids: the DAVIS palette up to 255, hashed beyond.

    Ids above 255 get a deterministic bright colour so overlays of panoptic ids stay stable.
    """
    ids = np.asarray(ids, dtype=np.int64)
    colours = davis_palette()[np.clip(ids, 0, 255)]
    large = ids > 255
    if np.any(large):
        hashed = (ids[large].astype(np.uint64) * np.uint64(2654435761)) % np.uint64(2**24)
        rgb = np.stack([(hashed >> np.uint64(s)) & np.uint64(255) for s in (0, 8, 16)], -1)
        colours[large] = (rgb.astype(np.uint16) // 2 + 96).astype(np.uint8)
    return colours
