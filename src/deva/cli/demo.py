"""The embedded demo: track the first-frame masks of a generated synthetic video.

    deva-demo [output=outputs/demo] [seed=1000] [model.weights=FILE] [amp=bf16]

Writes ``overlay.mp4`` (prediction over the frames), ``montage.png`` (ground truth vs
prediction on a few frames) and ``scores.json`` (J&F against the generator's ground truth).
The default weights are the repository's embedded checkpoint: run from the repository (or a
source checkout), or give ``model.weights=FILE``. ``python tools/demo.py`` takes the same
arguments.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from deva.config import ConfigError, compose, repository_path
from deva.config.options import autocast_dtype
from deva.data.synthetic import SyntheticVideoConfig, generate_video
from deva.inference.options import InferenceOptions, pick_device
from deva.inference.propagator import Propagator
from deva.io.video import Mp4Writer, overlay_mask
from deva.metrics import jf_sequence, jf_summary
from deva.modeling.weights import build_model
from deva.pipelines.vos import segment_frames

log = logging.getLogger("demo")


def run(cfg) -> dict[str, float]:
    weights = cfg.model.weights
    if weights and not Path(weights).is_file() and repository_path(weights).is_file():
        weights = str(repository_path(weights))  # the embedded checkpoint, from any folder
    if weights and not Path(weights).is_file():
        raise FileNotFoundError(f"weights file not found: {weights} (model.weights=null: random)")
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    video = generate_video(
        SyntheticVideoConfig(num_frames=cfg.num_frames, height=cfg.height, width=cfg.width),
        seed=cfg.seed,
    )
    device = pick_device(cfg.device)
    amp = autocast_dtype(cfg.get("amp", "none"), device)
    model = build_model(cfg.model.preset, weights).to(device)
    print(
        f"demo: {video.num_frames} synthetic frames ({cfg.height}x{cfg.width}, seed {cfg.seed}), "
        f"{len(video.objects)} objects, weights {weights or 'RANDOM'}, device {device}, "
        f"amp {cfg.get('amp', 'none')} -> {out}"
    )
    names = [f"{t:05d}" for t in range(video.num_frames)]
    frames = zip(names, video.frames, strict=True)
    first = {names[0]: video.masks[0].astype(np.int64)}
    propagator = Propagator(model, options=InferenceOptions(autocast=amp))
    predictions = []
    with Mp4Writer(out / "overlay.mp4", fps=cfg.fps) as writer:
        stream = segment_frames(propagator, frames, first, shorter_side=cfg.size)
        for (_, ids), frame in tqdm(
            zip(stream, video.frames, strict=True), total=video.num_frames, desc="tracking"
        ):
            predictions.append(ids)
            writer.write(overlay_mask(frame, ids))
    pred = np.stack(predictions)
    scores = jf_summary(jf_sequence(pred, video.masks, strict=False).stats)
    (out / "scores.json").write_text(json.dumps(scores, indent=2))
    picks = np.linspace(0, video.num_frames - 1, 4).round().astype(int)
    rows = [
        np.concatenate([overlay_mask(video.frames[t], video.masks[t]) for t in picks], axis=1),
        np.concatenate([overlay_mask(video.frames[t], pred[t]) for t in picks], axis=1),
    ]
    Image.fromarray(np.concatenate(rows, axis=0)).save(out / "montage.png")
    print(
        f"J&F-Mean {scores['J&F-Mean']:.3f} (J {scores['J-Mean']:.3f}, F {scores['F-Mean']:.3f}) "
        f"against the generator's ground truth; wrote {out / 'overlay.mp4'}, "
        f"{out / 'montage.png'} (top: ground truth, bottom: prediction), {out / 'scores.json'}"
    )
    return scores


def main(argv: list[str] | None = None) -> int:
    """Compose ``demo.yaml`` with ``argv`` and run the demo; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        run(compose("demo", argv))
    except (ConfigError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
