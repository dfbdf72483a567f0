"""Allow ``python -m dicomnode``."""

from dicomnode.cli import main

raise SystemExit(main())
