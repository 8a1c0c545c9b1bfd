"""The one exception type for user errors: a bad spec, a bad file, a bad config.

The CLI prints its message on one line and exits 2; anything else is a bug and keeps its traceback.
"""


class AffectlensError(Exception):
    """A user error whose message is one readable line that names the culprit."""
