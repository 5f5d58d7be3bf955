"""The base of every error graft reports to the user as one clear line (no traceback)."""


class GraftError(Exception):
    """An error whose message already says what is wrong and how to fix it."""
