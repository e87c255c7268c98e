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


def pickled_weights(field: str, name) -> RcfdError:
    """The error for a model whose weights file is a pickle holding more than tensors (transformers loads
    .bin files with ``weights_only=True`` and refuses such a file before anything in it runs)."""
    return RcfdError(f"{field} '{name}' has a weights file holding objects beyond tensors, which loading would "
                     f"run as code; it was not loaded. Save the model with save_pretrained (safetensors) and "
                     f"point {field} at that")
