"""The embedded demo: track the first-frame masks of a generated synthetic video.

    deva-demo [output=outputs/demo] [seed=1000] [model.weights=FILE] [amp=bf16]

Writes ``overlay.mp4`` (prediction over the frames), ``montage.png`` (ground truth vs
prediction on a few frames) and ``scores.json`` (J&F against the generator's ground truth).
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
from deva.io.outputs import OutputFolder, check_folder
from deva.io.video import Mp4Writer, overlay_mask
from deva.metrics import jf_sequence, jf_summary
from deva.pipelines.vos import segment_frames

log = logging.getLogger("demo")


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
    video = generate_video(
        SyntheticVideoConfig(
            num_frames=config.num_frames, height=config.height, width=config.width
        ),
        seed=config.seed,
    )
    print(
        f"demo: {video.num_frames} synthetic frames ({config.height}x{config.width}, seed "
        f"{config.seed}), {len(video.objects)} objects, weights {weights or 'RANDOM'}, device "
        f"{device}, amp {config.amp} -> {out}"
    )
    names = [f"{t:05d}" for t in range(video.num_frames)]
    frames = zip(names, video.frames, strict=True)
    first = {names[0]: video.masks[0].astype(np.int64)}
    propagator = Propagator(model, options=options)
    predictions = []
    with Mp4Writer(folder.path("overlay.mp4"), fps=config.fps, fragmented=True) as writer:
        stream = segment_frames(propagator, frames, first, shorter_side=config.size)
        for (_, ids), frame in tqdm(
            zip(stream, video.frames, strict=True), total=video.num_frames, desc="tracking"
        ):
            predictions.append(ids)
            writer.write(overlay_mask(frame, ids))
    pred = np.stack(predictions)
    scores = jf_summary(jf_sequence(pred, video.masks, strict=False).stats)
    folder.write_json("scores.json", scores, indent=2)
    picks = np.linspace(0, video.num_frames - 1, 4).round().astype(int)
    rows = [
        np.concatenate([overlay_mask(video.frames[t], video.masks[t]) for t in picks], axis=1),
        np.concatenate([overlay_mask(video.frames[t], pred[t]) for t in picks], axis=1),
    ]
    with atomic_path(folder.path("montage.png")) as temporary:
        Image.fromarray(np.concatenate(rows, axis=0)).save(temporary)
    folder.write_run({"settings": dataclasses.asdict(config), "state": "done"}, final=True)
    print(
        f"J&F-Mean {scores['J&F-Mean']:.3f} (J {scores['J-Mean']:.3f}, F {scores['F-Mean']:.3f}) "
        f"against the generator's ground truth; wrote {out / 'overlay.mp4'}, "
        f"{out / 'montage.png'} (top: ground truth, bottom: prediction), {out / 'scores.json'}"
    )
    return scores


def main(argv: list[str] | None = None) -> int:
    """Compose ``demo.yaml`` with ``argv`` and run the demo; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    return run_tool("error:", lambda: run(compose("demo", argv)))


if __name__ == "__main__":
    sys.exit(main())
