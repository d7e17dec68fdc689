"""``python -m lookalike.cli``: the same as the ``lookalike`` command."""

from lookalike.cli import main

raise SystemExit(main())
