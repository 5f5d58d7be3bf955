"""The base of every error graft reports to the user as one clear line (no traceback)."""


class GraftError(Exception):
    """An error whose message already says what is wrong and how to fix it."""


class UsageError(GraftError):
    """The command was asked for something it cannot do as asked (exit code 2, like a usage error)."""
