"""``python -m proxima.marketplace.demo``: run the demo."""

import sys

from proxima.marketplace.demo.cli import main

sys.exit(main())
