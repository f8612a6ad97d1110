"""The base of every error a user can fix: its message says what and what to do.

The CLI prints these without a traceback; anything else is a bug and keeps one.
"""


class EmberError(Exception):
    pass


class ClusterError(EmberError):
    """The local Ray cluster or a deployment on it is not in the expected state."""
