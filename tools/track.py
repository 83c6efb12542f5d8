"""Track every object of your own video (image segmenter + propagation).

    python tools/track.py input=VIDEO_OR_FRAME_DIR output=DIR [segmenter=NAME] [key=value ...]

The same as the installed ``deva-track`` command; the code and every option are in
:mod:`deva.cli.track`.
"""

import sys

from deva.cli.track import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
