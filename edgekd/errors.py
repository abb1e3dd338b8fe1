"""The exception types: user errors, and failed checks.

A user error (bad path, bad checkpoint, bad config, shape mismatch) is an ``EdgekdError`` whose
message is one line saying what is wrong and how to fix it. The CLI prints it without a traceback
and exits with code 2. Anything else is a bug and keeps its traceback.
"""


class EdgekdError(Exception):
    """A problem with the user's input; ``str(err)`` is a one-line message naming the fix."""

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class CheckFailed(EdgekdError):
    """A stage's own check failed (e.g. ONNX parity); exit code 1, like a failed gate."""

    exit_code = 1


class StorageError(EdgekdError):
    """A write failed for a reason of the disk, not of the model: no space, no permission, read-only.

    Raised by ``edgekd.io`` (see ``storage_error``) wherever a stage writes, with the path and the space
    free and needed, so that a full disk is never reported as a bad opset or a bad layer; exit code 2.
    """
