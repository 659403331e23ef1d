"""The one exception type users see.

Anything a user can fix (a bad path, an unknown model, an empty prompt, an out-of-range
position) raises :class:`HubError` with a one-line message that names the problem and the fix.
The CLI prints it as ``error: <message>`` and exits with status 2, without a traceback.
"""


class HubError(Exception):
    """A problem with the user's input or environment, with a message that says how to fix it."""
