"""``python -m exeunits.vm pack|info``: build and inspect GVMI images (see exeunits/vm/gvmi.py)."""

from __future__ import annotations

import sys

from exeunits.vm.gvmi import main

__all__: list[str] = []

sys.exit(main())
