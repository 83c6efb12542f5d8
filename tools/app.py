"""Web demo (Gradio): track anything in an uploaded video.

    python tools/app.py [demo=tiny] [key=value ...]

The same as the installed ``deva-app`` command; the code and every option are in
:mod:`deva.cli.app`.
"""

import sys

from deva.cli.app import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
