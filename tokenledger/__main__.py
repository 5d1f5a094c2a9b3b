"""``python -m tokenledger``."""

from tokenledger.cli import main

raise SystemExit(main())
