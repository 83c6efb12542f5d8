"""Run the propagation model over a benchmark, in its official output format.

    python tools/evaluate.py benchmark=NAME output=DIR model.weights=FILE [key=value ...]

The same as the installed ``deva-evaluate`` command; the code and every option are in
:mod:`deva.cli.evaluate`.
"""

import sys

from deva.cli.evaluate import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
