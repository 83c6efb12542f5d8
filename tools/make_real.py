"""Build real training imagery (photo cut-outs, backgrounds, pseudo-videos) from Debian packages.

    python tools/make_real.py output=datasets/real [key=value ...]

The same as the installed ``deva-make-real`` command; the code and every option are in
:mod:`deva.cli.make_real`.
"""

import sys

from deva.cli.make_real import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
