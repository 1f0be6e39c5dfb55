"""``python -m swat_dist`` is the ``swat-dist`` command."""

import sys

from .cli import main

sys.exit(main())
