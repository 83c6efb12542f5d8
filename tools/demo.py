"""The embedded demo: track a generated synthetic video.

    python tools/demo.py [output=outputs/demo] [key=value ...]

The same as the installed ``deva-demo`` command; the code and every option are in
:mod:`deva.cli.demo`.
"""

import sys

from deva.cli.demo import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
