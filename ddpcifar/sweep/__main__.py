"""`python -m ddpcifar.sweep`: run, show, schema."""

import sys

from ddpcifar.sweep.cli import main

sys.exit(main())
