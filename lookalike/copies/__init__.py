"""Copy detection: the copy check (``check``) and its geometric verification (``geometry``)."""
