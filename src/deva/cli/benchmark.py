"""Speed, memory and mask-equality benchmarks; results go in the README's benchmark table.

    deva-benchmark [suite=propagation|tracker|consensus|memory|training|all]
        [presets=[small,published]] [size=480] [frames=20] [objects=2] [device=auto|cpu|cuda]
        [amp=none|bf16|fp16] [threads=0] [quick=true] [out=benchmark.json] [weights=auto]
        [segments=40] [clip_size=3] [detect_every=5] [tracker_frames=10]
        [memory_frames=10000] [memory_size=64] [plot=FILE.png]
        [train_presets=[tiny,small,published]] [train_size=384] [train_steps=3]

``tasks=[...]`` is an alias of ``suite``. Prints a Markdown table (timings and the mask checks
between the timed variants) and writes everything as JSON to ``out``. The logic lives in
:mod:`deva.bench`. ``python tools/benchmark.py`` takes the same arguments.
"""

from __future__ import annotations

import sys

from deva.bench.common import parse_options
from deva.bench.report import format_table
from deva.bench.run import run_suites
from deva.cli.common import console_logging
from deva.config import ConfigError


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark suites ``argv`` asks for; returns the exit status."""
    with console_logging():
        return _main(argv)


def _main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        cfg = parse_options(argv)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    result = run_suites(cfg, progress=lambda msg: print(msg, file=sys.stderr, flush=True))
    setup = result["setup"]
    print(
        f"{setup['device_name']} ({setup['device']}), {setup['threads']} threads, "
        f"torch {setup['torch']}, load average {setup['load_average_at_start']} -> "
        f"{setup['load_average_at_end']}"
    )
    print(format_table(result))
    if cfg.out:
        print(f"wrote {cfg.out}")
    failed = [c for c in result["checks"] if c["passed"] is False]
    if failed:
        print(f"{len(failed)} mask check(s) failed (see the table)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
