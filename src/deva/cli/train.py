"""Train the propagation model.

    deva-train [stage=synthetic|static|video|finetune] [trainer=cpu|gpu|ddp]
        [trainer.devices=N] [trainer.num_nodes=K] [data.*=...] [model.weights=FILE]
        [ckpt_path=FILE] [output_dir=DIR] [debug=fast]

Without arguments: the small model on synthetic videos generated on the fly, on the CPU, with
TensorBoard logs and checkpoints under outputs/train/. See deva/configs/train.yaml for examples and
deva.training.train for what is built. ``python tools/train.py`` takes the same arguments.
"""

from __future__ import annotations

import logging
import sys

from deva.cli import quiet_albumentations
from deva.config import ConfigError, compose, quote_paths

log = logging.getLogger("train")


def main(argv: list[str] | None = None) -> int:
    """Compose ``train.yaml`` with ``argv`` and train; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    quiet_albumentations()
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s"))
    for name in ("deva", "train"):  # Lightning has its own console handler
        logging.getLogger(name).addHandler(handler)
        logging.getLogger(name).setLevel(logging.INFO)
    if any(arg in ("-h", "--help") for arg in argv):
        print(__doc__)
        return 0
    try:
        cfg = compose("train", quote_paths(argv, ("ckpt_path", "output_dir", "model.weights")))
        from deva.training.train import summary_lines, train

        result = train(cfg)
    except (ConfigError, FileNotFoundError, ValueError) as error:
        print(f"train: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("train: interrupted", file=sys.stderr)
        return 130
    if result["global_rank"] == 0:  # DDP re-launches this script for the other ranks
        for line in summary_lines(result):
            log.info(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
