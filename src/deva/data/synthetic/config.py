"""What a synthetic video looks like, the records that describe its contents, and names.

:class:`SyntheticVideoConfig` holds every setting of the scene and of the simulated image
model; :class:`SyntheticObject` and :class:`StuffRegion` describe what was generated; the
name and seed helpers fix how videos and frames of a generated dataset are called.
"""

from __future__ import annotations

from dataclasses import dataclass

SHAPES = ("ellipse", "polygon", "blob")
ROLES = ("free", "enter", "leave", "exit_return", "cross")


@dataclass(frozen=True)
class SyntheticVideoConfig:
    """What a synthetic video looks like and how noisy its simulated detections are.

    Sizes are in pixels; object sizes and speeds are fractions of the shorter frame side so
    that the same config gives similar videos at any resolution.
    """

    num_frames: int = 40
    height: int = 240
    width: int = 320
    num_objects: int = 4
    shapes: tuple[str, ...] = SHAPES
    object_radius: tuple[float, float] = (0.1, 0.2)
    max_speed: float = 0.02
    max_rotation: float = 0.05
    scale_range: tuple[float, float] = (0.8, 1.25)
    warp_amplitude: float = 0.08
    camera_shift: float = 0.1
    camera_zoom: float = 0.05
    camera_rotation: float = 3.0
    noise_std: float = 3.0
    enter_leave: bool = True
    exit_and_return: bool = True
    crossing: bool = True
    num_thing_categories: int = 8
    num_stuff_regions: int = 3
    num_stuff_categories: int = 4
    det_miss_rate: float = 0.1
    det_spurious_rate: float = 0.3
    det_split_rate: float = 0.05
    det_merge_rate: float = 0.1
    det_boundary_noise: int = 3
    det_category_noise: float = 0.05
    det_stuff_miss_rate: float = 0.05
    det_min_area: int = 30

    def __post_init__(self) -> None:
        if self.num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {self.num_frames}")
        if self.height < 16 or self.width < 16:
            raise ValueError(f"frame size must be at least 16x16, got {self.height}x{self.width}")
        if not 0 <= self.num_objects <= 255:
            raise ValueError(f"num_objects must lie in [0, 255], got {self.num_objects}")
        unknown = [s for s in self.shapes if s not in SHAPES]
        if unknown or not self.shapes:
            raise ValueError(f"shapes must be a non-empty subset of {SHAPES}, got {self.shapes}")
        lo, hi = self.object_radius
        if not 0 < lo <= hi:
            raise ValueError(f"object_radius must be 0 < min <= max, got {self.object_radius}")
        if not 0 < self.scale_range[0] <= self.scale_range[1]:
            raise ValueError(f"scale_range must be 0 < min <= max, got {self.scale_range}")
        if self.num_thing_categories < 1:
            raise ValueError(f"num_thing_categories must be >= 1, got {self.num_thing_categories}")
        if self.num_stuff_regions < 1 or self.num_stuff_categories < 1:
            raise ValueError(
                "num_stuff_regions and num_stuff_categories must be >= 1, got "
                f"{self.num_stuff_regions} and {self.num_stuff_categories}"
            )
        for name in ("det_miss_rate", "det_split_rate", "det_merge_rate", "det_category_noise"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ValueError(f"{name} is a probability in [0, 1], got {value}")

    @property
    def stuff_category_ids(self) -> list[int]:
        """Stuff categories come after the thing categories: ``T+1 .. T+S``."""
        first = self.num_thing_categories + 1
        return list(range(first, first + self.num_stuff_categories))


@dataclass
class SyntheticObject:
    """One generated thing: its label in the ground truth and how it was made."""

    id: int
    category_id: int
    shape: str
    role: str
    depth: int
    isthing: bool = True


@dataclass
class StuffRegion:
    """One background region: its index in :attr:`SyntheticVideo.stuff` and its category."""

    index: int
    category_id: int
    isthing: bool = False


def frame_name(index: int) -> str:
    """DAVIS-style frame name: ``00000``, ``00001``, ..."""
    return f"{index:05d}"


def video_seed(seed: int, index: int) -> list[int]:
    """The seed of video ``index`` in a dataset generated with ``seed``."""
    return [int(seed), int(index)]


def video_name(index: int) -> str:
    """The name of video ``index`` in a generated dataset: ``video_000``, ``video_001``, ..."""
    return f"video_{index:03d}"
