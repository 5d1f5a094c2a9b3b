"""``python -m billing``."""

from billing.cli import main

raise SystemExit(main())
