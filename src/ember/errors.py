"""Errors a user can fix, at the bottom of the layers so that any of them may raise one.

The ``ember`` command prints such an error as one line, without a traceback, and exits 2. Its
message says what was expected, what came, and what to do. ``ConfigError`` is one; other layers'
errors a user causes (an unknown run, a damaged checkpoint) are caught by the command by name.

Example:
    >>> try:
    ...     raise UserError("unknown run 'x'; see `ember runs`")
    ... except UserError as e:
    ...     print(e)
    unknown run 'x'; see `ember runs`
"""

from __future__ import annotations

__all__ = ["UserError"]


class UserError(Exception):
    """A mistake the user can fix; printed without a traceback."""
