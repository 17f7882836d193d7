"""Errors that reach the user as one clear line, naming the file, the feature and the fix."""


class TwinError(Exception):
    """A problem with the user's inputs or environment; its message says what to do."""


class InputError(TwinError):
    """An input file that cannot be used as given."""
