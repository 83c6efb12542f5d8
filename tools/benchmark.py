"""Speed, memory and mask-equality benchmarks.

    python tools/benchmark.py [suite=NAME] [key=value ...]

The same as the installed ``deva-benchmark`` command; the code and every option are in
:mod:`deva.cli.benchmark`.
"""

import sys

from deva.cli.benchmark import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
