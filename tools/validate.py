"""Score the checkpoints of a training run (or one checkpoint) on validation sets.

    python tools/validate.py run=OUTPUT_DIR | ckpt=FILE [key=value ...]

The same as the installed ``deva-validate`` command; the code and every option are in
:mod:`deva.cli.validate`.
"""

import sys

from deva.cli.validate import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
