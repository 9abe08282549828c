"""``python -m tyqw``: the same command line as the ``tyqw`` script."""

from ._cli import main

raise SystemExit(main())
