"""``python -m fks`` is the ``fks`` command."""

import sys

from fks.cli import main

sys.exit(main())
