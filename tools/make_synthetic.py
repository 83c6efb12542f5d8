"""Generate a synthetic DAVIS-style dataset with simulated detections.

    python tools/make_synthetic.py [output=outputs/synthetic] [key=value ...]

The same as the installed ``deva-make-synthetic`` command; the code and every option are in
:mod:`deva.cli.make_synthetic`.
"""

import sys

from deva.cli.make_synthetic import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
