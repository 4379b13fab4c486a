"""The one exception type for mistakes a user can make.

Core modules raise `NanoGPTError` with a message that says what is wrong and what to do next;
the CLI prints it as one line and exits 1. Anything else escaping the core is a bug.
"""


class NanoGPTError(Exception):
    """A problem the user can fix (bad flag, missing dataset, unreadable checkpoint, ...)."""
