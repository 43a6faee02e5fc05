"""``python -m kuoro.cli``: the command line."""

import sys

from kuoro.cli.app import main

sys.exit(main())
