"""Videos: reading frames (:func:`read_video`), colour overlays, H.264 mp4 writing with PyAV.

OpenCV builds often cannot encode H.264, so mp4 files are written through PyAV (libx264,
yuv420p, which needs even frame sizes: odd sizes are padded by one replicated row/column).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import cv2
import numpy as np

from deva.io.frames import FrameReader
from deva.io.masks import id_colours

logger = logging.getLogger(__name__)


def mask_boundaries(mask: np.ndarray, width: int = 1) -> np.ndarray:
    """(H, W) bool: pixels of non-zero segments that touch a different id (4-neighbourhood)."""
    mask = np.asarray(mask)
    edge = np.zeros(mask.shape, dtype=bool)
    vertical = mask[1:, :] != mask[:-1, :]
    horizontal = mask[:, 1:] != mask[:, :-1]
    edge[1:, :] |= vertical
    edge[:-1, :] |= vertical
    edge[:, 1:] |= horizontal
    edge[:, :-1] |= horizontal
    if width > 1:
        kernel = np.ones((2 * width - 1, 2 * width - 1), dtype=np.uint8)
        edge = cv2.dilate(edge.astype(np.uint8), kernel).astype(bool)
    return edge & (mask != 0)


def overlay_mask(
    frame: np.ndarray,
    mask: np.ndarray,
    *,
    alpha: float = 0.5,
    outline_width: int = 1,
    colours: np.ndarray | None = None,
) -> np.ndarray:
    """Blend segment colours over an RGB uint8 (H, W, 3) frame and draw segment outlines.

    ``mask`` is an (H, W) integer id map (0 = background, left untouched). Colours come from
    ``colours[id]`` when given (a (K, 3) table), else the DAVIS palette (hashed beyond 255).
    Outlines are drawn in the segment colour at full strength; ``outline_width=0`` disables
    them.
    """
    frame = np.asarray(frame)
    mask = np.asarray(mask)
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"expected an RGB frame (H, W, 3), got shape {frame.shape}")
    if mask.shape != frame.shape[:2]:
        raise ValueError(f"mask shape {mask.shape} does not match frame size {frame.shape[:2]}")
    ids = mask.astype(np.int64)
    colour = id_colours(ids) if colours is None else np.asarray(colours, np.uint8)[ids]
    out = frame.astype(np.float32)
    fg = ids != 0
    out[fg] = (1 - alpha) * out[fg] + alpha * colour[fg].astype(np.float32)
    if outline_width > 0:
        edge = mask_boundaries(ids, outline_width)
        out[edge] = colour[edge]
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


class Mp4Writer:
    """Write RGB uint8 frames to an H.264 mp4 (libx264, yuv420p) with PyAV.

    The frame size is fixed by the first frame; odd sizes are padded to even ones by
    replicating the last row / column. Use as a context manager or call :meth:`close`.
    ``fragmented`` writes a fragmented mp4 (a fragment at each keyframe, one a second, each
    flushed to disk): a process killed while writing leaves a file playable up to its last
    fragment, where a plain mp4 has no index until it is closed.
    """

    def __init__(
        self,
        path: str | Path,
        fps: float = 24.0,
        *,
        crf: int = 20,
        codec: str = "libx264",
        fragmented: bool = False,
    ) -> None:
        import av  # imported lazily: reading frames and tests of other parts do not need it

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        options = (
            {"movflags": "frag_keyframe+empty_moov+default_base_moof", "flush_packets": "1"}
            if fragmented
            else {}
        )
        self._container = av.open(str(self.path), mode="w", options=options)
        rate = Fraction(fps).limit_denominator(1001)
        self._stream = self._container.add_stream(codec, rate=rate)
        self._stream.pix_fmt = "yuv420p"
        self._stream.options = {"crf": str(crf)}
        if fragmented:
            # A keyframe a second, and no look-ahead: each frame's packet leaves the encoder
            # at once, so the fragments on disk keep up with the frames written.
            self._stream.options.update({"g": str(max(1, round(fps))), "tune": "zerolatency"})
        self._size: tuple[int, int] | None = None
        self._av = av
        self.frames_written = 0

    def write(self, frame: np.ndarray) -> None:
        """Append one RGB uint8 (H, W, 3) frame."""
        frame = np.asarray(frame)
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(
                f"expected an RGB uint8 frame (H, W, 3), got {frame.dtype} {frame.shape}"
            )
        h, w = frame.shape[:2]
        if self._size is None:
            self._size = (h, w)
            self._stream.height = h + h % 2
            self._stream.width = w + w % 2
        elif (h, w) != self._size:
            raise ValueError(f"frame size {(h, w)} differs from the first frame's {self._size}")
        if h % 2 or w % 2:
            frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        video_frame = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), "rgb24")
        for packet in self._stream.encode(video_frame):
            self._container.mux(packet)
        self.frames_written += 1

    def close(self) -> None:
        """Flush the encoder and close the file (safe to call twice)."""
        if self._container is None:
            return
        try:
            if self._size is not None:
                for packet in self._stream.encode():
                    self._container.mux(packet)
        finally:
            self._container.close()
            self._container = None
        logger.debug("wrote %d frames to %s", self.frames_written, self.path)

    def __enter__(self) -> Mp4Writer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def write_mp4(path: str | Path, frames: Iterable[np.ndarray], fps: float = 24.0) -> int:
    """Write RGB uint8 frames to an H.264 mp4; return the number of frames written."""
    with Mp4Writer(path, fps) as writer:
        for frame in frames:
            writer.write(frame)
        count = writer.frames_written
    if count == 0:
        Path(path).unlink(missing_ok=True)
        raise ValueError(f"no frames to write to {path}")
    return count


# --------------------------------------------------------------------------------------------
# Reading


class VideoFrames(FrameReader):
    """Lazy ``(name, RGB uint8 (H, W, 3))`` frames of a video file or a folder of images.

    Video files are decoded with PyAV in presentation order; frames are named ``00000``,
    ``00001``, ... and ``fps`` is the stream's average rate (so a variable-frame-rate video
    keeps its duration when re-encoded at ``fps``). Folder frames are named by their file
    stem in natural order (``deva.io.frames.list_frame_files``) and have ``fps = None``; a
    frame that cannot be decoded raises ValueError naming the file. ``len()`` is the number of
    files, or the frame count the container reports (0 when unknown). Iterating again starts
    from the first frame.
    """

    def _probe_video(self) -> tuple[float | None, int]:
        import av

        try:
            with av.open(str(self.source)) as container:
                if not container.streams.video:
                    raise ValueError(f"{self.source} has no video stream")
                stream = container.streams.video[0]
                rate = stream.average_rate or stream.guessed_rate
                return (float(rate) if rate else None), int(stream.frames or 0)
        except av.error.FFmpegError as error:
            raise ValueError(f"cannot open video {self.source}: {error}") from error

    def _decode_video(self) -> Iterator[np.ndarray]:
        import av

        index = 0
        try:
            with av.open(str(self.source)) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                for frame in container.decode(stream):
                    yield frame.to_ndarray(format="rgb24")
                    index += 1
        except av.error.FFmpegError as error:
            raise ValueError(f"cannot decode frame {index} of {self.source}: {error}") from error


def read_video(source: str | Path) -> VideoFrames:
    """Frames of a video file or image folder for ``DecoupledTracker.stream``.

    >>> for result in tracker.stream(read_video("in.mp4")): ...
    """
    return VideoFrames(source)


def draw_labels(
    frame: np.ndarray,
    texts: dict[int, str],
    boxes: dict[int, list[int]],
    *,
    colours: np.ndarray | None = None,
) -> np.ndarray:
    """Write ``texts[id]`` at the top-left corner of ``boxes[id]`` (``[x0, y0, x1, y1]``).

    Text is drawn on a filled rectangle in the segment's colour (DAVIS palette unless
    ``colours``), white or black for contrast; the font scales with the frame height.
    """
    out = np.ascontiguousarray(frame).copy()
    height = out.shape[0]
    scale = max(0.3, height / 900)
    thickness = 1 if height < 900 else 2
    for segment_id, text in texts.items():
        if segment_id not in boxes or boxes[segment_id] is None or not text:
            continue
        x0, y0 = int(boxes[segment_id][0]), int(boxes[segment_id][1])
        if colours is None:
            colour = id_colours(np.array([segment_id]))[0]
        else:
            colour = np.asarray(colours, np.uint8)[segment_id]
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        top = max(0, y0 - th - base)
        cv2.rectangle(out, (x0, top), (x0 + tw, top + th + base), tuple(int(c) for c in colour), -1)
        ink = (0, 0, 0) if int(colour.astype(int).sum()) > 380 else (255, 255, 255)
        cv2.putText(
            out, text, (x0, top + th), cv2.FONT_HERSHEY_SIMPLEX, scale, ink, thickness, cv2.LINE_AA
        )
    return out
