"""The one exception type for a user's mistake.

A `UserError` ends a command with exit code 2 and its message, one sentence that names the
file, key or layer at fault and the fix. Anything else that escapes is a bug: a traceback and
exit code 1.
"""


class UserError(Exception):
    """A mistake the user can fix: bad config, missing file, wrong checkpoint, failed check."""
