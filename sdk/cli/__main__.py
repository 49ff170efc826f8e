"""``python -m edgerec.sdk.cli``."""

import sys

from edgerec.sdk.cli.app import main

sys.exit(main())
