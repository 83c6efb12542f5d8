"""Code the tests share: repository paths, loading the tools, a segmenter double, mp4 probing."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import av
import numpy as np
import torch

from deva.types import Segmentation

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
EMBEDDED = REPO / "checkpoints" / "deva-small-synthetic.pth"


@contextmanager
def threads(count: int) -> Iterator[None]:
    """``torch`` CPU threads set to ``count`` inside the block (module-scoped fixtures)."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def load_tool(name: str) -> ModuleType:
    """``tools/<name>.py`` loaded as a module, so its ``main`` runs in this process."""
    spec = importlib.util.spec_from_file_location(f"_tool_{name}", REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class ListSegmenter:
    """Serves a list of per-frame segmentations by frame name (the frame's index) and records
    the frame names it was called with."""

    def __init__(self, segmentations: list[Segmentation]) -> None:
        self.segmentations = segmentations
        self.calls: list[str] = []

    @property
    def indices(self) -> list[int]:
        """The calls as frame indices."""
        return [int(name) for name in self.calls]

    def __call__(self, image: np.ndarray, *, frame_name: str | None = None) -> Segmentation:
        self.calls.append(frame_name)
        return self.segmentations[int(frame_name)]


def mp4_info(path: Path) -> tuple[int, float, tuple[int, int]]:
    """Frame count, average frame rate and frame size of an mp4 file."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        return len(frames), float(stream.average_rate), frames[0].shape[:2]


#: What every tool writes beside its results: the run's record and its file manifest.
RUN_RECORDS = ("manifest.txt", "run.json")


def results_in(folder: Path) -> list[str]:
    """The names in ``folder`` other than the run's records, sorted."""
    return sorted(p.name for p in folder.iterdir() if p.name not in RUN_RECORDS)


def uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE of a mask (run lengths over the column-major pixels, starting
    with background), as some annotation files store it."""
    runs, value, count = [], 0, 0
    for pixel in (np.asarray(mask).reshape(-1, order="F") > 0).astype(int):
        if pixel == value:
            count += 1
        else:
            runs.append(count)
            value, count = pixel, 1
    runs.append(count)
    return {"counts": runs, "size": list(np.asarray(mask).shape)}


def output_files(root: Path) -> dict[str, bytes]:
    """Every file of an output folder but the run's own records (``run.json``,
    ``manifest.txt``: their order depends on which process wrote what), by relative path."""
    skip = {"run.json", "manifest.txt"}
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name not in skip
    }
