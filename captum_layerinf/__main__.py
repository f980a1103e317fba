"""`python -m captum_layerinf` runs the same CLI as the `captum-layerinf` script."""

import sys

from .cli import main

sys.exit(main())
