"""The one exception type for a user's mistake.

A `UserError` ends a command with exit code 2 and its message, one sentence that names the
file, key or layer at fault and the fix. Anything else that escapes is a bug: a traceback and
exit code 1.
"""


class UserError(Exception):
    """A mistake the user can fix: bad config, missing file, wrong checkpoint, failed check."""


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM: the command stops where it is. The runner and the trainer fill in
    which unit was running and how far it got, for the one line the command ends with."""

    def __init__(self, signal_name: str = "SIGINT"):
        super().__init__(signal_name)
        self.signal_name = signal_name
        self.unit: str | None = None
        self.progress: str | None = None

    @classmethod
    def of(cls, stop: KeyboardInterrupt) -> "Interrupted":
        """`stop` itself where it is one, else an Interrupted for the Ctrl-C it was."""
        return stop if isinstance(stop, cls) else cls("SIGINT")

    def sentence(self) -> str:
        where = f" during {self.unit}" if self.unit else ""
        progress = f" ({self.progress})" if self.progress else ""
        return (f"stopped by {self.signal_name}{where}{progress}; finished stages are kept, "
                f"run the same command again to resume.")
