"""``python -m adae_stream.cli``: the same command as the ``adae-stream`` script."""

import sys

from adae_stream.cli import main

sys.exit(main())
