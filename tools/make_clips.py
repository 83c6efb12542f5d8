"""Write real annotated clips from Debian packages in the DAVIS layout (for measuring).

    python tools/make_clips.py output=datasets/clips [key=value ...]

The same as the installed ``deva-make-clips`` command; the code and every option are in
:mod:`deva.cli.make_clips`.
"""

import sys

from deva.cli.make_clips import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
