"""`python -m hfox_fit`: the hfox-fit command line."""

import sys

from .cli import main

sys.exit(main())
