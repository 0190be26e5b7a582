"""Convert CIFAR-10 into FFCV files: `python data_prep.py --help`."""

from ddpcifar.data.prepare import main

raise SystemExit(main())
