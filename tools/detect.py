"""Run an image segmenter over videos once and keep its detections for later runs.

    python tools/detect.py input=VIDEO_OR_FRAMES_OR_FOLDER_OF_VIDEOS output=DIR segmenter=NAME

The same as the installed ``deva-detect`` command; the code and every option are in
:mod:`deva.cli.detect`.
"""

import sys

from deva.cli.detect import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
