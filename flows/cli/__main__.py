"""``python -m vigil.flows.cli``: the ``vigil`` command."""

from __future__ import annotations

import sys

from vigil.flows.cli import main

sys.exit(main())
