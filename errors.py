"""The one exception type a user can act on: bad input or environment, reported as one line, never a traceback."""


class UserError(Exception):
    """A problem with the user's input or environment: reported as one line on stderr, never as a traceback."""
