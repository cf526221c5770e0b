"""What users see of a problem: the one exception type shown as a clean one-line message (exit code 2,
not a traceback), and the one-line notice for a key, flag or name that goes in the next release."""

import sys

_noticed: set[str] = set()


def deprecated(message: str, once: bool = False) -> None:
    """One line on stderr: `deprecated: <message> (the old spelling goes in the next release)`;
    with `once`, a message already shown in this process is not repeated."""
    if once and message in _noticed:
        return
    _noticed.add(message)
    print(f"deprecated: {message} (the old spelling goes in the next release)", file=sys.stderr)


class UserError(Exception):
    """Bad input from the user: a missing file, a malformed record, an unknown recipe key.

    The message must name the file, line or field so the user can fix it without reading code.
    """
