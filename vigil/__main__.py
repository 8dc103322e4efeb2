"""``python -m vigil``: the ``vigil`` command line."""

from __future__ import annotations

import sys

from vigil.flows.cli import main

sys.exit(main())
