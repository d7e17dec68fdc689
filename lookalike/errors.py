"""One error hierarchy for lookalike, mapped once to exit statuses and HTTP statuses.

Every error that lookalike raises on purpose is a :class:`LookalikeError` of one of four kinds,
and its message says what to do next:

=====================  ===========================================  ===========  ======
kind                   meaning                                      exit status  HTTP
=====================  ===========================================  ===========  ======
:class:`BadInput`      the request itself is wrong (a bad image,    1 (2 for     400
                       filter, feature, option or file)             filters)     (413 too big)
:class:`NotFound`      what was asked for does not exist            1            404
:class:`Forbidden`     not allowed (a path outside the roots)       1            403
:class:`Busy`          another writer holds the index               1            409
:class:`Unavailable`   the storage or a backend cannot serve now    1            503
                       (read-only, damaged, full; Milvus down)
=====================  ===========================================  ===========  ======

:func:`exit_status` and :func:`http_status` are the only places that turn an exception into a
status; the command line and the server both call them. A few exceptions from outside
lookalike are mapped here too (``ValueError``: bad input; ``FileNotFoundError``: not found; a
full disk or a write refused by the file system: unavailable).
"""

from __future__ import annotations

import errno

__all__ = [
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "BadInput",
    "Busy",
    "Forbidden",
    "LookalikeError",
    "NotFound",
    "Unavailable",
    "exit_status",
    "http_status",
]

#: Exit statuses of the ``lookalike`` command.
EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

#: ``OSError`` numbers of a full disk or quota: the storage, not the request.
FULL_DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})

#: ``OSError`` numbers of a write refused by the file system: the storage, not the request.
READ_ONLY_ERRNOS = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})


class LookalikeError(Exception):
    """An error lookalike raises on purpose; its message says what happened and what to do."""

    exit_status: int = EXIT_ERROR
    http_status: int = 500


class BadInput(LookalikeError, ValueError):
    """The request itself is wrong: an unusable image, filter, feature, option or input file."""

    http_status: int = 400


class NotFound(LookalikeError):
    """What was asked for does not exist (an image id, a job, a file)."""

    http_status: int = 404


class Forbidden(LookalikeError):
    """Not allowed: a server-side path outside every allowed root."""

    http_status: int = 403


class Busy(LookalikeError):
    """Another writer holds the index; try again when it is done."""

    http_status: int = 409


class Unavailable(LookalikeError):
    """The storage or a backend cannot serve now (read-only, damaged or full; Milvus down)."""

    http_status: int = 503


def exit_status(exc: BaseException) -> int | None:
    """The ``lookalike`` command's exit status for ``exc``; None for an unexpected error."""
    if isinstance(exc, LookalikeError):
        return exc.exit_status
    if isinstance(exc, ValueError | OSError | MemoryError):
        return EXIT_ERROR
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    return None


def http_status(exc: BaseException) -> int | None:
    """The HTTP status for ``exc``; None for an unexpected error (a server error)."""
    if isinstance(exc, LookalikeError):
        return exc.http_status
    if isinstance(exc, FileNotFoundError):
        return 404
    if isinstance(exc, OSError) and exc.errno in FULL_DISK_ERRNOS | READ_ONLY_ERRNOS:
        return 503
    if isinstance(exc, ValueError):
        return 400
    return None
