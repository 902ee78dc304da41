"""The one base class of errors that are the user's to fix.

Every subsystem raises a subclass of `UserError` for what a user can fix (a bad config, an unreadable
source, refused credentials, ...). Its message says what went wrong, where, and how to fix it; the
`asymvae` command prints it as one line and exits with status 2. Anything else escaping the command is a
bug in asymvae and keeps its traceback. This module imports nothing, so every layer can use it.
"""


class UserError(Exception):
    """An error the user can fix; its message says what, where and how."""
