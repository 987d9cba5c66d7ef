"""Cost of a network on a systolic-array accelerator: ``python tools/hwcost.py --help`` (see effnn/hw/app.py)."""

import sys

from effnn.hw.app import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
