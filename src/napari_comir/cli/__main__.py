"""``python -m napari_comir.cli``: the ``napari-comir`` command."""

import sys

from . import main

sys.exit(main())
