"""One exception type for every problem a user can fix; the CLI prints it as one line."""


def one_line(text: str) -> str:
    """Escape newlines and other control characters (user text is echoed in messages)."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


class RcfdError(Exception):
    """A problem with the user's input or environment, with the fix in the message."""

    def __init__(self, message: str):
        super().__init__(one_line(message))


class NonFiniteError(RcfdError):
    """A reward or loss became NaN/inf during training."""
