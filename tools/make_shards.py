"""Pack a training dataset into webdataset tar shards.

    python tools/make_shards.py dataset=NAME root=DIR output=DIR [key=value ...]

The same as the installed ``deva-make-shards`` command; the code and every option are in
:mod:`deva.cli.make_shards`.
"""

import sys

from deva.cli.make_shards import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
