"""Real imagery for training from Debian packages: photo cut-outs, backgrounds, pseudo-videos.

:func:`build_real_imagery` (``deva-make-real``) reads packages of photographs with exact
alpha masks (``tuxpaint-stamps-default``: stamps, many of them real photo cut-outs) and of
real backgrounds (wallpaper packages), keeps the photographs, splits them into train and
validation **by source image** (variants of one stamp, mirrored or numbered, stay together),
and writes one folder::

    cutouts/<split>/<name>.png          RGBA cut-outs as shipped (cropped to the object)
    backgrounds/<split>/<name>.jpg      one picture per wallpaper (the largest size shipped)
    static/<split>/<name>.jpg + .png    cut-out over a background, binary mask (static layout)
    videos/<split>/JPEGImages, Annotations, Detections, Meta    pseudo-videos (DAVIS layout)
    licences/<package>.copyright        each package's copyright file
    sources.json                        packages, versions, licences, every file's split

Pseudo-videos are the synthetic generator's scenes (:mod:`deva.data.synthetic`: motion,
scale change, non-rigid warp, occlusion between objects, objects entering, leaving and
coming back, camera motion) with :class:`CutoutAppearance`: real cut-outs over real
backgrounds. Training draws new ones on the fly (``data.real_root``); the tool writes a
fixed set for validation. Everything is deterministic from the seed.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import cv2
import numpy as np
from PIL import Image

from deva.data.debian import DebPackage, package_files
from deva.data.synthetic import SyntheticVideoConfig, generate_video, video_name
from deva.data.synthetic.writing import write_jpeg, write_synthetic_video
from deva.io import atomic
from deva.io.atomic import atomic_path
from deva.io.outputs import OutputFolder

logger = logging.getLogger(__name__)

CUTOUT_PACKAGES = ("tuxpaint-stamps-default",)
BACKGROUND_PACKAGES = ("plasma-workspace-wallpapers", "mate-backgrounds")
SPLITS = ("train", "val")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
_VARIANT = re.compile(r"([ _-]*(mirror|flip|back|photo|\d+))+$")
_SIZE = re.compile(r"[ _-]*\d{3,5}x\d{3,5}$")


@dataclass(frozen=True)
class Picture:
    """One picture taken from a package: where it came from, its source key and its pixels."""

    package: str
    member: str
    name: str
    key: str
    pixels: np.ndarray  # RGBA for cut-outs, RGB for backgrounds


@dataclass
class RealImagerySummary:
    """What :func:`build_real_imagery` wrote, per split."""

    cutouts: dict[str, int] = field(default_factory=dict)
    backgrounds: dict[str, int] = field(default_factory=dict)
    static_pairs: dict[str, int] = field(default_factory=dict)
    videos: dict[str, int] = field(default_factory=dict)
    rejected_cutouts: int = 0


# ---- choosing pictures ---------------------------------------------------------------------
def is_photograph(rgba: np.ndarray, *, min_pixels: int = 2000) -> bool:
    """Whether an RGBA cut-out looks like a photograph rather than a drawing.

    Drawings and clip-art use few flat colours; photographs have nearly as many distinct
    colours as pixels. The test: at least ``min_pixels`` opaque pixels, more than a quarter of
    them of distinct colour.
    """
    opaque = rgba[..., 3] >= 128
    count = int(opaque.sum())
    if count < min_pixels:
        return False
    colours = rgba[..., :3][opaque].astype(np.uint32)
    packed = (colours[:, 0] << 16) | (colours[:, 1] << 8) | colours[:, 2]
    return len(np.unique(packed)) * 4 > count


def source_key(member: str) -> str:
    """The source image a file belongs to: variants (``_mirror``, ``-2``, ``_back``,
    ``1920x1080``) and, for Plasma-style wallpapers (``<Name>/contents/images/<size>.jpg``),
    the sizes of one picture share one key."""
    path = PurePosixPath(member)
    if path.parent.name == "images" and path.parent.parent.name == "contents":
        return path.parent.parent.parent.name.lower()
    stem = _SIZE.sub("", path.stem.lower())
    return _VARIANT.sub("", stem) or stem


def split_of(key: str, *, val_fraction: float, seed: int) -> str:
    """``"val"`` for a fixed ``val_fraction`` of source keys (by hash), else ``"train"``."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return "val" if int.from_bytes(digest[:8], "big") / 2**64 < val_fraction else "train"


def _decode(data: bytes, *, alpha: bool) -> np.ndarray | None:
    try:
        with Image.open(io.BytesIO(data)) as image:
            if alpha and not (image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info):
                return None
            return np.asarray(image.convert("RGBA" if alpha else "RGB"))
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def _crop_to_alpha(rgba: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(rgba[..., 3] >= 128)
    return rgba[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]


def _shrink(pixels: np.ndarray, longest: int) -> np.ndarray:
    h, w = pixels.shape[:2]
    if max(h, w) <= longest:
        return pixels
    f = longest / max(h, w)
    size = (max(1, round(w * f)), max(1, round(h * f)))
    return cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)


def _name_of(package: str, member: str, root: str) -> str:
    path = PurePosixPath(member)
    inner = path.relative_to(root) if path.is_relative_to(root) else path
    if inner.parent.name == "images" and inner.parent.parent.name == "contents":
        inner = inner.parent.parent.parent
    stem = "_".join(inner.with_suffix("").parts) or path.stem
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{package}_{stem}")


def copyright_path(package: str) -> str:
    """Where a Debian package keeps its copyright (and licence) file."""
    return f"usr/share/doc/{package}/copyright"


def _files_keeping_copyright(
    package: DebPackage, licences: dict[str, str]
) -> Iterable[tuple[str, bytes]]:
    for member, data in package_files(package):
        if member == copyright_path(package.name):
            licences[package.name] = data.decode("utf-8", "replace")
        yield member, data


def cutouts_in(
    package: DebPackage,
    *,
    licences: dict[str, str] | None = None,
    under: str = "usr/share",
    min_pixels: int = 2000,
    max_side: int = 640,
) -> tuple[list[Picture], int]:
    """The photographic RGBA cut-outs of ``package`` (PNG with alpha, under ``under``) and
    the number of alpha PNGs rejected as drawings or too small. The package's copyright
    text goes into ``licences`` (by package name)."""
    found: list[Picture] = []
    rejected = 0
    for member, data in _files_keeping_copyright(package, {} if licences is None else licences):
        if not member.startswith(under) or not member.lower().endswith(".png"):
            continue
        rgba = _decode(data, alpha=True)
        if rgba is None:
            continue
        if not is_photograph(rgba, min_pixels=min_pixels):
            rejected += 1
            continue
        pixels = _shrink(_crop_to_alpha(rgba), max_side)
        name = _name_of(package.name, member, under)
        found.append(Picture(package.name, member, name, source_key(member), pixels))
    return found, rejected


def backgrounds_in(
    package: DebPackage,
    *,
    licences: dict[str, str] | None = None,
    under: str = "usr/share",
    min_side: int = 480,
    max_short: int = 720,
) -> list[Picture]:
    """One picture per source (the largest file of it) of ``package``'s JPEG/PNG images of
    at least ``min_side`` pixels on the shorter side and not a plain colour, shrunk to
    ``max_short``. The package's
    copyright text goes into ``licences`` (by package name)."""
    largest: dict[str, tuple[int, str, bytes]] = {}
    for member, data in _files_keeping_copyright(package, {} if licences is None else licences):
        if member.startswith(under) and member.lower().endswith(IMAGE_SUFFIXES):
            key = source_key(member)
            if key not in largest or len(data) > largest[key][0]:
                largest[key] = (len(data), member, data)
    found = []
    for key, (_, member, data) in sorted(largest.items()):
        rgb = _decode(data, alpha=False)
        if rgb is None or min(rgb.shape[:2]) < min_side or float(rgb.std()) < 12.0:
            continue  # too small, or a plain colour
        h, w = rgb.shape[:2]
        rgb = _shrink(rgb, round(max_short * max(h, w) / min(h, w)))
        found.append(Picture(package.name, member, _name_of(package.name, member, under), key, rgb))
    return found


# ---- appearance of pseudo-videos -----------------------------------------------------------
def _read_rgba(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGBA"))


def _read_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


class CutoutAppearance:
    """Real photo cut-outs over real photographs, for :func:`deva.data.synthetic.generate_video`.

    Each object is a random cut-out (flipped at random) scaled so that it fits the object's
    radius; the background is a random crop of a random picture, scaled to cover the canvas.
    Pictures are read on first use and kept (a few hundred small files).
    """

    def __init__(self, cutouts: Sequence[str | Path], backgrounds: Sequence[str | Path]) -> None:
        if not cutouts or not backgrounds:
            raise ValueError(
                f"real appearance needs cut-outs and backgrounds, got {len(cutouts)} and "
                f"{len(backgrounds)}"
            )
        self.cutouts = [Path(p) for p in cutouts]
        self.backgrounds = [Path(p) for p in backgrounds]
        self._cache: dict[Path, np.ndarray] = {}

    @classmethod
    def from_folder(cls, root: str | Path, split: str = "train") -> CutoutAppearance:
        """The cut-outs and backgrounds of one split of a :func:`build_real_imagery` folder."""
        root = Path(root)
        cutouts = sorted((root / "cutouts" / split).glob("*.png"))
        backgrounds = sorted((root / "backgrounds" / split).glob("*.jpg"))
        if not cutouts or not backgrounds:
            raise FileNotFoundError(
                f"{root} holds no cutouts/{split}/*.png or backgrounds/{split}/*.jpg: "
                "make it with deva-make-real output=DIR"
            )
        return cls(cutouts, backgrounds)

    def _load(self, path: Path, reader: Callable[[Path], np.ndarray]) -> np.ndarray:
        if path not in self._cache:
            self._cache[path] = reader(path)
        return self._cache[path]

    def background(
        self, rng: np.random.Generator, layout: np.ndarray, short_side: int
    ) -> np.ndarray:
        height, width = layout.shape
        picture = self._load(self.backgrounds[int(rng.integers(len(self.backgrounds)))], _read_rgb)
        return cover_crop(picture, height, width, rng).astype(np.float32)

    def sprite(
        self, rng: np.random.Generator, shape: str, radius: float
    ) -> tuple[np.ndarray, np.ndarray, str]:
        path = self.cutouts[int(rng.integers(len(self.cutouts)))]
        rgba = self._load(path, _read_rgba)
        if rng.random() < 0.5:
            rgba = rgba[:, ::-1]
        h, w = rgba.shape[:2]
        # The half-diagonal fits the radius, so the object stays inside the sprite turned.
        f = 2 * radius / math.hypot(h, w)
        sh, sw = max(1, round(h * f)), max(1, round(w * f))
        interpolation = cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR
        small = cv2.resize(np.ascontiguousarray(rgba), (sw, sh), interpolation=interpolation)
        size = 2 * math.ceil(radius) + 5
        y0, x0 = (size - sh) // 2, (size - sw) // 2
        alpha = np.zeros((size, size), dtype=np.float32)
        texture = np.zeros((size, size, 3), dtype=np.float32)
        alpha[y0 : y0 + sh, x0 : x0 + sw] = small[..., 3] / np.float32(255)
        texture[y0 : y0 + sh, x0 : x0 + sw] = small[..., :3]
        return alpha, texture, path.stem


def cover_crop(
    picture: np.ndarray, height: int, width: int, rng: np.random.Generator
) -> np.ndarray:
    """A random ``height × width`` crop of ``picture`` scaled (×1–1.5 beyond covering) and
    flipped at random."""
    h, w = picture.shape[:2]
    f = max(height / h, width / w) * rng.uniform(1.0, 1.5)
    sh, sw = max(height, math.ceil(h * f)), max(width, math.ceil(w * f))
    interpolation = cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR
    scaled = cv2.resize(picture, (sw, sh), interpolation=interpolation)
    y0 = int(rng.integers(sh - height + 1))
    x0 = int(rng.integers(sw - width + 1))
    crop = scaled[y0 : y0 + height, x0 : x0 + width]
    return crop[:, ::-1] if rng.random() < 0.5 else crop


def compose_static(
    cutout: np.ndarray,
    background: np.ndarray,
    rng: np.random.Generator,
    *,
    height: int = 480,
    width: int = 640,
    cover: tuple[float, float] = (0.35, 0.8),
) -> tuple[np.ndarray, np.ndarray]:
    """An RGB image and a 0/255 mask: ``cutout`` (RGBA) pasted over a crop of ``background``,
    its longer side ``cover`` of the image's shorter side, at a random place inside."""
    canvas = cover_crop(background, height, width, rng).astype(np.float32)
    h, w = cutout.shape[:2]
    f = rng.uniform(*cover) * min(height, width) / max(h, w)
    sh, sw = min(height, max(1, round(h * f))), min(width, max(1, round(w * f)))
    small = cv2.resize(
        cutout, (sw, sh), interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR
    )
    y0, x0 = int(rng.integers(height - sh + 1)), int(rng.integers(width - sw + 1))
    alpha = small[..., 3:4].astype(np.float32) / 255
    region = canvas[y0 : y0 + sh, x0 : x0 + sw]
    region += alpha * (small[..., :3] - region)
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[y0 : y0 + sh, x0 : x0 + sw] = np.where(small[..., 3] >= 128, 255, 0)
    return np.clip(canvas + 0.5, 0, 255).astype(np.uint8), mask


# ---- the folder ----------------------------------------------------------------------------
def _write_png(path: Path, pixels: np.ndarray) -> None:
    """RGBA, RGB or grey pixels as a PNG, atomically."""
    if pixels.ndim == 3:
        code = cv2.COLOR_RGBA2BGRA if pixels.shape[-1] == 4 else cv2.COLOR_RGB2BGR
        pixels = cv2.cvtColor(np.ascontiguousarray(pixels), code)
    with atomic_path(path) as temporary:
        if not cv2.imwrite(str(temporary), pixels):
            raise OSError(f"cannot write {path}")


def _unique(pictures: Iterable[Picture]) -> list[Picture]:
    seen: dict[str, int] = {}
    result = []
    for picture in pictures:
        count = seen.get(picture.name, 0)
        seen[picture.name] = count + 1
        name = picture.name if count == 0 else f"{picture.name}-{count + 1}"
        result.append(Picture(picture.package, picture.member, name, picture.key, picture.pixels))
    return result


def build_real_imagery(
    cutout_packages: Sequence[DebPackage],
    background_packages: Sequence[DebPackage],
    out: OutputFolder,
    *,
    val_fraction: float = 0.2,
    seed: int = 0,
    static_per_cutout: int = 2,
    videos: dict[str, int] | None = None,
    video: SyntheticVideoConfig | None = None,
    min_pixels: int = 2000,
    min_background_side: int = 480,
    progress: Callable[[Iterable], Iterable] = lambda items: items,
) -> RealImagerySummary:
    """Write the real-imagery folder (layout in the module docstring) into ``out``.

    Each package's copyright file is copied to ``licences/``; ``videos`` gives the
    pseudo-videos written per split (default: 16 validation videos, none for training, which
    draws them on the fly); ``video`` their scene settings. Cut-outs need ``min_pixels``
    opaque pixels, backgrounds ``min_background_side`` pixels on their shorter side.
    """
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must lie in (0, 1), got {val_fraction}")
    videos = {"train": 0, "val": 16} if videos is None else dict(videos)
    summary = RealImagerySummary()
    licences: dict[str, str] = {}
    cutouts: list[Picture] = []
    for package in cutout_packages:
        found, rejected = cutouts_in(package, licences=licences, min_pixels=min_pixels)
        cutouts += found
        summary.rejected_cutouts += rejected
        logger.info(
            "%s: %d photo cut-outs, %d drawings left out", package.name, len(found), rejected
        )
    backgrounds = [
        p
        for package in background_packages
        for p in backgrounds_in(package, licences=licences, min_side=min_background_side)
    ]
    cutouts, backgrounds = _unique(cutouts), _unique(backgrounds)
    split = {p.name: split_of(p.key, val_fraction=val_fraction, seed=seed) for p in cutouts}
    split.update(
        {p.name: split_of(p.key, val_fraction=val_fraction, seed=seed) for p in backgrounds}
    )
    for kind, pictures in (("cut-outs", cutouts), ("backgrounds", backgrounds)):
        for name in SPLITS:
            if not any(split[p.name] == name for p in pictures):
                raise ValueError(
                    f"no {kind} in the {name} split ({len(pictures)} in all): the packages "
                    "hold too few photographs"
                )
    sources = []
    for picture in cutouts:
        part = split[picture.name]
        _write_png(out.path(f"cutouts/{part}/{picture.name}.png"), picture.pixels)
        summary.cutouts[part] = summary.cutouts.get(part, 0) + 1
        sources.append(
            {
                "file": f"cutouts/{part}/{picture.name}.png",
                "package": picture.package,
                "member": picture.member,
                "source": picture.key,
                "split": part,
            }
        )
    params = [cv2.IMWRITE_JPEG_QUALITY, 92]
    for picture in backgrounds:
        part = split[picture.name]
        write_jpeg(out.path(f"backgrounds/{part}/{picture.name}.jpg"), picture.pixels, params)
        summary.backgrounds[part] = summary.backgrounds.get(part, 0) + 1
        sources.append(
            {
                "file": f"backgrounds/{part}/{picture.name}.jpg",
                "package": picture.package,
                "member": picture.member,
                "source": picture.key,
                "split": part,
            }
        )
    rng = np.random.default_rng([seed, 1])
    by_split = {name: [p for p in backgrounds if split[p.name] == name] for name in SPLITS}
    for picture in progress(cutouts):
        part = split[picture.name]
        for k in range(static_per_cutout):
            scene = by_split[part][int(rng.integers(len(by_split[part])))]
            image, mask = compose_static(picture.pixels, scene.pixels, rng)
            stem = f"{picture.name}_{k}"
            write_jpeg(out.path(f"static/{part}/{stem}.jpg"), image, params)
            _write_png(out.path(f"static/{part}/{stem}.png"), mask)
            summary.static_pairs[part] = summary.static_pairs.get(part, 0) + 1
    config = video or SyntheticVideoConfig(num_frames=24, height=240, width=320)
    for part, count in videos.items():
        if count <= 0:
            continue
        appearance = CutoutAppearance.from_folder(out.root, part)
        for index in range(count):
            clip = generate_video(config, [seed, SPLITS.index(part), index], appearance)
            write_synthetic_video(
                out, video_name(index), clip, config=config, prefix=f"videos/{part}/"
            )
        summary.videos[part] = count
    missing = [p.name for p in (*cutout_packages, *background_packages) if p.name not in licences]
    if missing:
        raise ValueError(f"no copyright file in {', '.join(missing)}: its licence is unknown")
    for name, text in sorted(licences.items()):
        atomic.write_text(out.path(f"licences/{name}.copyright"), text)
    packages = [
        {"name": p.name, "version": p.version, "role": role}
        for role, group in (("cutouts", cutout_packages), ("backgrounds", background_packages))
        for p in group
    ]
    out.write_json(
        "sources.json",
        {"packages": packages, "val_fraction": val_fraction, "seed": seed, "files": sources},
    )
    return summary
