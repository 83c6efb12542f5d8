"""A list of arrays that keeps RAM bounded: offline tracking buffers a whole video with it.

The first arrays stay in memory up to a byte budget; later ones go, losslessly, to files in
a private temporary folder (RGB frames and id maps as PNG, anything else as ``.npy``) and
are read back on access. The folder is deleted by :meth:`SpillList.close` (also on garbage
collection), so a long video costs disk, not RAM.
"""

from __future__ import annotations

import logging
import tempfile
import weakref
from pathlib import Path

import cv2
import numpy as np

logger = logging.getLogger(__name__)

DEFAULT_BUDGET_MIB = 256.0


class SpillList:
    """Append-only list of numpy arrays: in RAM up to ``budget_mib``, then on disk.

    ``directory`` is where the temporary folder is made (default: the system's, i.e.
    ``$TMPDIR``). Arrays read back equal the arrays stored (dtype, shape and values).
    """

    def __init__(
        self, *, budget_mib: float = DEFAULT_BUDGET_MIB, directory: str | Path | None = None
    ) -> None:
        if budget_mib < 0:
            raise ValueError(f"budget_mib must be >= 0, got {budget_mib}")
        self._budget = int(budget_mib * 2**20)
        self._parent = directory
        self._held = 0
        self._items: list[np.ndarray | Path] = []
        self._folder: tempfile.TemporaryDirectory | None = None
        self._finalizer: weakref.finalize | None = None

    def __len__(self) -> int:
        return len(self._items)

    @property
    def spilled(self) -> int:
        """How many arrays live on disk."""
        return sum(isinstance(item, Path) for item in self._items)

    def append(self, array: np.ndarray) -> None:
        """Store ``array`` (not copied while it stays in RAM: do not change it afterwards)."""
        array = np.asarray(array)
        if self._held + array.nbytes <= self._budget:
            self._held += array.nbytes
            self._items.append(array)
            return
        self._items.append(self._write(array, len(self._items)))

    def __getitem__(self, index: int) -> np.ndarray:
        item = self._items[index]
        return item if isinstance(item, np.ndarray) else _read(item)

    def close(self) -> None:
        """Forget every array and delete the temporary folder."""
        self._items.clear()
        self._held = 0
        if self._finalizer is not None:
            self._finalizer()
            self._finalizer = None
        self._folder = None

    def _write(self, array: np.ndarray, index: int) -> Path:
        if self._folder is None:
            self._folder = tempfile.TemporaryDirectory(prefix="deva-spill-", dir=self._parent)
            self._finalizer = weakref.finalize(self, self._folder.cleanup)
            logger.debug(
                "buffer over %d MiB: spilling to %s", self._budget >> 20, self._folder.name
            )
        folder = Path(self._folder.name)
        if _png_compatible(array):
            path = folder / f"{index:07d}.png"
            pixels = array[..., ::-1] if array.ndim == 3 else array  # cv2 stores BGR
            ok, encoded = cv2.imencode(".png", pixels, [cv2.IMWRITE_PNG_COMPRESSION, 1])
            if not ok:
                raise OSError(f"could not encode a {array.shape} {array.dtype} array as PNG")
            path.write_bytes(encoded.tobytes())
        else:
            path = folder / f"{index:07d}.npy"
            np.save(path, array)
        return path


def _png_compatible(array: np.ndarray) -> bool:
    """RGB uint8 images and 2-D uint8 / uint16 maps round-trip exactly through PNG."""
    if array.size == 0:
        return False
    if array.ndim == 3:
        return array.dtype == np.uint8 and array.shape[2] == 3
    return array.ndim == 2 and array.dtype in (np.uint8, np.uint16)


def _read(path: Path) -> np.ndarray:
    if path.suffix == ".npy":
        return np.load(path)
    pixels = cv2.imdecode(np.frombuffer(path.read_bytes(), np.uint8), cv2.IMREAD_UNCHANGED)
    if pixels is None:
        raise OSError(f"spilled buffer file {path} cannot be read back")
    return np.ascontiguousarray(pixels[..., ::-1]) if pixels.ndim == 3 else pixels


def compact_ids(ids: np.ndarray) -> np.ndarray:
    """An id map in the smallest unsigned type that holds it (uint8 / uint16 / int64), so
    it spills as a PNG when it can; ``.astype(np.int64)`` restores it."""
    top = int(ids.max()) if ids.size else 0
    low = int(ids.min()) if ids.size else 0
    if low >= 0 and top < 256:
        return ids.astype(np.uint8)
    if low >= 0 and top < 65536:
        return ids.astype(np.uint16)
    return ids.astype(np.int64)
