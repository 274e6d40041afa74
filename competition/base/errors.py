"""Exceptions for mistakes a user can fix; the CLI prints them as one line with exit code 2."""


class UserError(Exception):
    """A problem with input, configuration or environment that the user can fix (what, where, how)."""


class DataError(UserError, ValueError):
    """A bad input file (corrupt JPEG, wrong-size mask, malformed RLE row...), naming the file."""
