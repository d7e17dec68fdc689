"""Argument types of the ``lookalike`` command: paths, texts and numbers within their bounds."""

from __future__ import annotations

import argparse
from collections.abc import Callable

#: Upper bounds of the numeric options: past them a value is a typo or an attack (a billion
#: inference threads, a k that asks faiss for exabytes), not a setting.
MAX_THREADS = 1024
MAX_WORKERS = 1024
MAX_BATCH = 4096
MAX_K = 1_000_000
MAX_CHECK_K = 10_000
MAX_PIXELS_LIMIT = 10**10
MAX_READERS = 64
MAX_UPLOAD_MB = 4096

#: Longest ``search --text``, in characters, as the server's (long texts take minutes and GBs).
MAX_TEXT = 500


def positive_int(text: str) -> int:
    """An argparse ``type``: a whole number of 1 or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number of 1 or more, got {value}")
    return value


def path_arg(text: str) -> str:
    """An argparse ``type``: a path, never empty (an unset shell variable must not mean the
    current folder, or the default index)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a path, got an empty one")
    return text


def text_arg(text: str) -> str:
    """An argparse ``type``: words to search for, at most :data:`MAX_TEXT` characters."""
    if len(text) > MAX_TEXT:
        raise argparse.ArgumentTypeError(
            f"expected at most {MAX_TEXT} characters of text, got {len(text):,}"
        )
    return text


def int_in(low: int, high: int) -> Callable[[str], int]:
    """An argparse ``type``: a whole number from ``low`` to ``high``."""

    def parse(text: str) -> int:
        try:
            value = int(text.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(
                f"expected a whole number from {low:,} to {high:,}, got {value:,}"
            )
        return value

    parse.__name__ = "number"  # argparse names the type in its messages
    return parse


def megabytes(text: str) -> float:
    """An argparse ``type``: a size in MB above 0 and at most :data:`MAX_UPLOAD_MB`."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of MB, got {text!r}") from None
    if not 0.0 < value <= MAX_UPLOAD_MB:  # also refuses nan and inf
        raise argparse.ArgumentTypeError(
            f"expected a number of MB above 0 and at most {MAX_UPLOAD_MB:,}, got {text}"
        )
    return value


def fraction(text: str) -> float:
    """An argparse ``type``: a number from 0 to 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {value}")
    return value


def host_name(value: str) -> str:
    """An argparse ``type`` for ``--allow-host``: a host name or IP address (no scheme, path or
    spaces), or ``*``."""
    from lookalike.server.app import split_host

    if value.strip() == "*":
        return "*"
    if split_host(value) is None:
        raise argparse.ArgumentTypeError(f"{value!r} is not a host name (e.g. photos.lan)")
    return value.strip().lower()
