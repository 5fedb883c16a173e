"""``python -m sandport.cli``: the same as the ``sandport`` command."""

import sys

from sandport.cli import main

sys.exit(main())
