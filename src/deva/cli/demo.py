"""The embedded demo: track the first-frame masks of a generated synthetic video, or of a
real annotated clip.

    deva-demo [output=outputs/demo] [seed=1000] [model.weights=FILE] [amp=bf16]
    deva-demo clip=datasets/clips/labelme-street   # a real clip (JPEGImages/ + Annotations/)

Writes ``overlay.mp4`` (prediction over the frames), ``montage.png`` (ground truth vs
prediction on a few frames) and ``scores.json`` (J&F against the ground truth). ``clip`` is a
DAVIS-layout root plus a video name: ``ROOT/NAME`` reads ``ROOT/JPEGImages/NAME/*.jpg`` and
``ROOT/Annotations/NAME/*.png``, and scores every annotated frame (``tools/make_clips.py``
writes such clips from Debian packages).
The default weights are the repository's embedded checkpoint: run from the repository (or a
source checkout), or give ``model.weights=FILE``. ``python tools/demo.py`` takes the same
arguments.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from pathlib import Path

import numpy as np
from omegaconf import DictConfig
from PIL import Image
from tqdm import tqdm

from deva.cli.common import run_tool
from deva.config import builder, compose
from deva.config.schema import DemoConfig, parse
from deva.data.synthetic import SyntheticVideoConfig, generate_video
from deva.inference.propagator import Propagator
from deva.io.atomic import atomic_path
from deva.io.frames import list_frame_files, read_frame
from deva.io.masks import read_mask_png
from deva.io.outputs import OutputFolder, check_folder
from deva.io.video import Mp4Writer, overlay_mask
from deva.metrics import jf_sequence, jf_summary
from deva.pipelines.vos import segment_frames

log = logging.getLogger("demo")


@dataclasses.dataclass(frozen=True)
class DemoVideo:
    """The frames to track and their ground truth (``None``: a frame without annotation)."""

    frames: list[np.ndarray]
    masks: list[np.ndarray | None]
    description: str


def synthetic_video(config: DemoConfig) -> DemoVideo:
    """A generated video with the generator's exact masks."""
    video = generate_video(
        SyntheticVideoConfig(
            num_frames=config.num_frames, height=config.height, width=config.width
        ),
        seed=config.seed,
    )
    return DemoVideo(
        list(video.frames),
        [m.astype(np.int64) for m in video.masks],
        f"{video.num_frames} synthetic frames ({config.height}x{config.width}, seed "
        f"{config.seed}), {len(video.objects)} objects",
    )


def real_clip(path: Path) -> DemoVideo:
    """``ROOT/NAME`` of a DAVIS-layout root: the frames of ``JPEGImages/NAME`` and the masks
    of ``Annotations/NAME`` (by frame name); the first frame must be annotated."""
    root, name = path.parent, path.name
    try:
        images = list_frame_files(root / "JPEGImages" / name)
    except (FileNotFoundError, ValueError):
        raise FileNotFoundError(f"clip: no frames in {root / 'JPEGImages' / name}") from None
    annotations = root / "Annotations" / name
    given = {p.stem: p for p in annotations.glob("*.png")}
    masks = [
        read_mask_png(given[i.stem]).astype(np.int64) if i.stem in given else None for i in images
    ]
    if masks[0] is None or not masks[0].any():
        raise ValueError(f"clip: the first frame needs a mask with objects: {annotations}")
    frames = [read_frame(image) for image in images]
    for image, frame, mask in zip(images, frames, masks, strict=True):
        if mask is not None and mask.shape != frame.shape[:2]:
            raise ValueError(f"clip: mask of {image.name} is {mask.shape}, frame {frame.shape[:2]}")
    objects = len(np.unique(masks[0])) - 1
    annotated = sum(m is not None for m in masks)
    return DemoVideo(
        frames,
        masks,
        f"{len(frames)} frames of {path} ({annotated} annotated), {objects} objects",
    )


def run(cfg: DictConfig | DemoConfig) -> dict[str, float]:
    """Run the demo as ``cfg`` says; returns the J&F scores."""
    config = parse(DemoConfig, cfg)
    weights = builder.weights_path(config.model.weights) if config.model.weights else None
    if weights and not Path(weights).is_file():
        raise FileNotFoundError(f"weights file not found: {weights} (model.weights=null: random)")
    check_folder(config.output, overwrite=config.overwrite)
    options = builder.inference_options(config)
    device = options.torch_device()
    model = builder.model(dataclasses.replace(config.model, weights=weights)).to(device)
    folder = OutputFolder(config.output, tool="demo", overwrite=config.overwrite)
    folder.write_run({"settings": dataclasses.asdict(config), "state": "running"})
    out = folder.root
    video = real_clip(Path(config.clip)) if config.clip else synthetic_video(config)
    num_frames = len(video.frames)
    print(
        f"demo: {video.description}, weights {weights or 'RANDOM'}, device "
        f"{device}, amp {config.amp} -> {out}"
    )
    names = [f"{t:05d}" for t in range(num_frames)]
    frames = zip(names, video.frames, strict=True)
    first = {names[0]: video.masks[0]}
    propagator = Propagator(model, options=options)
    predictions = []
    with Mp4Writer(folder.path("overlay.mp4"), fps=config.fps, fragmented=True) as writer:
        stream = segment_frames(propagator, frames, first, shorter_side=config.size)
        for (_, ids), frame in tqdm(
            zip(stream, video.frames, strict=True), total=num_frames, desc="tracking"
        ):
            predictions.append(ids)
            writer.write(overlay_mask(frame, ids))
    scored = [t for t, mask in enumerate(video.masks) if mask is not None]
    pred = np.stack([predictions[t] for t in scored])
    truth = np.stack([video.masks[t] for t in scored])
    scores = jf_summary(jf_sequence(pred, truth, strict=False).stats)
    folder.write_json("scores.json", scores, indent=2)
    picks = [scored[i] for i in np.linspace(0, len(scored) - 1, 4).round().astype(int)]
    rows = [
        np.concatenate([overlay_mask(video.frames[t], video.masks[t]) for t in picks], axis=1),
        np.concatenate([overlay_mask(video.frames[t], predictions[t]) for t in picks], axis=1),
    ]
    with atomic_path(folder.path("montage.png")) as temporary:
        Image.fromarray(np.concatenate(rows, axis=0)).save(temporary)
    folder.write_run({"settings": dataclasses.asdict(config), "state": "done"}, final=True)
    print(
        f"J&F-Mean {scores['J&F-Mean']:.3f} (J {scores['J-Mean']:.3f}, F {scores['F-Mean']:.3f}) "
        f"against the ground truth; wrote {out / 'overlay.mp4'}, "
        f"{out / 'montage.png'} (top: ground truth, bottom: prediction), {out / 'scores.json'}"
    )
    return scores


def main(argv: list[str] | None = None) -> int:
    """Compose ``demo.yaml`` with ``argv`` and run the demo; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    return run_tool("error:", lambda: run(compose("demo", argv)))


if __name__ == "__main__":
    sys.exit(main())
