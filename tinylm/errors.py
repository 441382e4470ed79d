"""One exception type for every problem a user can fix.

The CLI prints a `TinyLMError` as a single line and exits non-zero; anything else is a bug
and keeps its traceback.
"""


class TinyLMError(Exception):
    """A user-facing error: bad input, missing file, corrupt checkpoint, wrong setting."""
