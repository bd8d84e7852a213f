"""The one base class of mistakes a user can fix (a path, a setting, a file, an installed package).

The command line prints such an error as one line, ``shortcutlm CMD: error: ...``, and exits 2;
anything else is a bug and keeps its traceback. Each module raises its own subclass, so the
message can name the file or key at fault.
"""
from __future__ import annotations


class UserError(Exception):
    """Something the user gave or installed is wrong; the message says what and how to fix it."""
