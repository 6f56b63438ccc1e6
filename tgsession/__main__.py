"""``python -m tgsession``: the tgsession command (see tgsession.cli)."""

import sys

from .cli import main

sys.exit(main())
