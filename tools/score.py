"""Score predictions in a benchmark's official format (one JSON object).

    python tools/score.py metric=jf|vpq|stq|owta gt=PATH pred=PATH [key=value ...]

The same as the installed ``deva-score`` command; the code and every option are in
:mod:`deva.cli.score`.
"""

import sys

from deva.cli.score import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
