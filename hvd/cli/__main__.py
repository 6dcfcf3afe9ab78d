"""`python -m hvd.cli`."""
import sys

from hvd.cli import main

sys.exit(main())
