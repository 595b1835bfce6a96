"""``python -m sparseopt`` (and ``torchrun ... -m sparseopt train``): the command line."""

import sys

from sparseopt.cli import main

if __name__ == "__main__":
    sys.exit(main())
