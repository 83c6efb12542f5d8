"""Train the propagation model.

    python tools/train.py [stage=NAME] [trainer=cpu|gpu|ddp] [key=value ...]

The same as the installed ``deva-train`` command; the code and every option are in
:mod:`deva.cli.train`.
"""

import sys

from deva.cli.train import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
