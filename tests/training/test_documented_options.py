"""Every dotted option the documentation names (``init.pixel_trunk=``, ``data.roots.generic=``,
``stage.accumulate_grad_batches=``, ...) is a key of the config it belongs to, so that a
documented command never stops with "unknown option"."""

from __future__ import annotations

import re

from omegaconf import OmegaConf

from deva.config import compose
from tests.helpers import REPO

DOCUMENTS = ("README.md", "datasets/README.md", "checkpoints/README.md", "docs/*.md")
#: ``key=`` after a space, a backtick, a quote or a line start; ``+key=`` adds keys on purpose
OPTION = re.compile(r"(?:^|[\s`\"'(\[])(\+?)([a-z_]+(?:\.[a-z_0-9]+)+)=")
#: dotted names that are not options of ours
NOT_OURS = {"cudnn.benchmark"}


def composed() -> list:
    """Each tool's config, with the training data and segmenter variants."""
    configs = [compose("train", [f"data={d}"]) for d in ("synthetic", "static", "video", "shards")]
    configs += [
        compose("track", [f"segmenter={s}"]) for s in ("sam", "grounded_sam", "sam3", "owlv2_sam")
    ]
    configs += [
        compose(name) for name in ("evaluate", "validate", "benchmark", "make_shards", "make_real")
    ]
    return configs


def has(config, key: str) -> bool:
    try:
        return OmegaConf.select(config, key, default=KeyError) is not KeyError
    except Exception:  # e.g. a named key under a list (data.roots of the static data)
        return False


def test_documented_options_exist() -> None:
    configs = composed()
    wrong = []
    for pattern in DOCUMENTS:
        for path in sorted(REPO.glob(pattern)):
            for number, line in enumerate(path.read_text().splitlines(), 1):
                for plus, key in OPTION.findall(line):
                    if key in NOT_OURS or key.startswith("validation.sets."):
                        continue  # sets are named by the user
                    if plus:  # a new key: its section must exist
                        key = key.rsplit(".", 1)[0]
                    if not any(has(c, key) for c in configs):
                        wrong.append(f"{path.relative_to(REPO)}:{number}: {key}")
    assert not wrong, wrong
    # the scan does find options (a broken pattern would pass vacuously)
    text = (REPO / "checkpoints" / "README.md").read_text()
    assert {"init.pixel_trunk", "init.mask_trunk"} <= {k for _, k in OPTION.findall(text)}
