"""The one base class of every failure a user can fix (bad data, a bad config, an unusable
model file, a disk that cannot be written): the workflow's script harness and the `vitct`
command print its message as one line, with no traceback, and stop."""


class UserError(Exception):
    """A failure the user can fix; its message says how."""
