"""`python -m dmax_core.sandbox FILE`: the same as `dmax sandbox FILE`."""

import sys

from dmax_core.sandbox.cli import main

sys.exit(main())
