"""``python -m cryoorient``: the same command line as the installed ``cryoorient`` script."""

import sys

from cryoorient.cli import main

if __name__ == "__main__":
    sys.exit(main())
