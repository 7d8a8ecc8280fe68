"""``python -m lmforge``: the same command as ``lmforge`` -- what ``torchrun -m lmforge`` starts."""

import sys

from lmforge.cli.main import main

sys.exit(main())
