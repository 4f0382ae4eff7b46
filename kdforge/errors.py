"""The one exception type for a user's mistake, and how its sentence reaches the terminal.

A `UserError` ends a command with exit code 2 and its message, one sentence that names the
file, key or layer at fault and the fix. Anything else that escapes is a bug: a traceback and
exit code 1, except inside `reading(...)`, where a file from outside is being parsed: there any
failure is that file's fault, and becomes a UserError naming it.
"""

import re
from contextlib import contextmanager


class UserError(Exception):
    """A mistake the user can fix: bad config, missing file, wrong checkpoint, failed check."""

    def __init__(self, message: str = ""):
        # A DataLoader worker's UserError comes back re-raised by torch with the worker's
        # traceback around it; the sentence is the traceback's last line.
        if message.startswith("Caught UserError in DataLoader worker"):
            message = message.rstrip().splitlines()[-1].split("UserError: ", 1)[-1]
        super().__init__(message)


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


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2066-\u2069\ufeff]")


def printable(text: str) -> str:
    """`text` safe for a terminal line: control characters (newlines, escape sequences that clear
    a screen or set a window title, bidirectional overrides) written as Python escapes."""
    def escape(match: re.Match) -> str:
        char = match.group()
        return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(char) or (
            f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")
    return _CONTROL.sub(escape, text)


def printable_name(name: object) -> str:
    """A name read from a file, quoted for a message: 'conv1', 'a\\nb'."""
    return f"'{printable(str(name))}'"


def reason(error: BaseException) -> str:
    """'ValueError: what it says', on one line and at most 200 characters of message."""
    text = " ".join(str(error).split())[:200]
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


@contextmanager
def reading(what: str):
    """Parsing a file (or a value) that came from outside kdforge: whatever fails in here is
    that input's fault and ends as one UserError naming `what`."""
    try:
        yield
    except (UserError, KeyboardInterrupt):
        raise
    except MemoryError:
        raise UserError(f"{what} declares more data than this machine can hold; it is not loaded.") from None
    except RecursionError:
        raise UserError(f"{what} is nested too deeply to read.") from None
    except Exception as e:  # noqa: BLE001 - a malformed input, by this block's contract
        raise UserError(f"{what} is malformed ({reason(e)}).") from None
