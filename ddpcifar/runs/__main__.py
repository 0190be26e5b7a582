"""`python -m ddpcifar.runs`: launch, stop, resume, clone, queue and list runs."""

import sys

from ddpcifar.runs.cli import main

sys.exit(main())
