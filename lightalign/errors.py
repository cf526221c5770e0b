"""The one exception type users see as a clean one-line message (exit code 2), not a traceback."""


class UserError(Exception):
    """Bad input from the user: a missing file, a malformed record, an unknown recipe key.

    The message must name the file, line or field so the user can fix it without reading code.
    """
