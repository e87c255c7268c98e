"""One exception type for every problem a user can fix; the CLI prints it as one line."""


class RcfdError(Exception):
    """A problem with the user's input or environment, with the fix in the message."""


class NonFiniteError(RcfdError):
    """A reward or loss became NaN/inf during training."""
