"""`python -m proxy` is the meshwire command."""

import sys

from proxy.cli import main

sys.exit(main())
