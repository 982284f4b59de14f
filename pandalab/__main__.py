"""``python -m pandalab``: the `pandalab` command (`pandalab.cli.main`)."""

import sys

from pandalab.cli import main

sys.exit(main())
