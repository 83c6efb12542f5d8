"""Convert OVIS's instance annotations into the VOS training layout.

    python tools/convert_ovis.py annotations=FILE images=DIR output=DIR [key=value ...]

The same as the installed ``deva-convert-ovis`` command; the code and every option are in
:mod:`deva.cli.convert_ovis`.
"""

import sys

from deva.cli.convert_ovis import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
