"""One exception family. Every message should tell the user what to do next."""

from __future__ import annotations


class OptimError(Exception):
    """Base class: the CLI prints the message on one line and exits with ``exit_code``."""

    exit_code = 2

    def __init__(self, message: str = "", *, detail: str = "") -> None:
        super().__init__(message)
        #: longer text (a tool's log) shown only with ``--debug``
        self.detail = detail


class InputError(OptimError):
    """A file, path or argument given by the user is missing or malformed."""


class RecipeError(InputError):
    """A recipe does not validate."""


class ModelError(InputError):
    """A model source, weights file or ONNX model cannot be loaded or is not usable."""


class DataError(InputError):
    """Calibration or evaluation data is missing, empty or does not fit the model."""


class OutputPathError(InputError):
    """An output location cannot be used (a directory where a file is wanted, a file where a
    folder is wanted, no permission): found before any work is done."""


class ExportError(OptimError):
    """The exported ONNX does not match PyTorch, or the export itself failed."""

    exit_code = 4


class QuantizeError(OptimError):
    """Quantization or precision conversion failed."""

    exit_code = 4


class BackendUnavailable(OptimError):
    """A backend (TensorRT, a GPU, an ONNX Runtime provider) is not present here."""

    exit_code = 5


class GateError(OptimError):
    """An accuracy gate failed: the candidate lost more than allowed."""

    exit_code = 3


class BuildError(OptimError):
    """TensorRT could not parse or build a model (a stage failure)."""

    exit_code = 4


class WriteError(OptimError):
    """Writing a result failed (disk full, I/O error): the message names the stage and the path."""

    exit_code = 4


class RunFolderBusy(OptimError):
    """Another optim process holds the run folder (``--no-wait``)."""

    exit_code = 6


def first_line(exc: BaseException | str, limit: int = 300) -> str:
    """The first line of an exception's message (its type name when it has none), cut to ``limit``."""
    text = str(exc).strip() or (type(exc).__name__ if isinstance(exc, BaseException) else "")
    return text.splitlines()[0][:limit] if text else ""
