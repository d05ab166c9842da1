"""Exception hierarchy of the library; ``cli.py`` maps these to exit codes."""


class PoseCliError(Exception):
    """Base class of every error posecli raises on purpose.

    The message is one line meant for the user. ``exit_code`` is what the CLI exits with.
    """

    exit_code = 1


class UsageError(PoseCliError):
    """Invalid arguments or options (exit code 2)."""

    exit_code = 2


class ConfigError(UsageError):
    """A config record refused a value of one of its fields (exit code 2). ``field`` names it,
    so that the command line can name the option that set it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


class CheckpointError(PoseCliError):
    """A checkpoint is missing, unsafe, or does not match the network."""


class ModelNotFoundError(CheckpointError):
    """A model name is not registered and is not an existing path."""


class InputError(PoseCliError):
    """An input (image, video, camera, annotation file) is missing, unreadable or corrupt."""


class DeviceError(PoseCliError):
    """The device asked for (CUDA, a GPU index) is not on this machine: its environment, like a
    missing camera (exit code 1)."""


class OutputError(PoseCliError):
    """An output cannot be written, or exists and overwriting was not allowed."""


class DecoderError(PoseCliError):
    """Heatmaps passed to the decoder have the wrong shape or dtype."""


class MissingDependencyError(PoseCliError):
    """An optional package (e.g. onnxruntime) or the ffmpeg binary is not installed."""


class TrainingError(PoseCliError):
    """Training cannot go on (the loss is no longer finite)."""


class BatchFailedError(PoseCliError):
    """Some inputs of a batch failed; the others' outputs were written (exit code 1)."""


class ResumableInterruptError(PoseCliError):
    """Stopped by Ctrl-C after saving what resumes the work (exit code 130)."""

    exit_code = 130


class OutputClosedError(OutputError):
    """Standard output was closed by its reader (``--json - | head``): the run stops like an
    interrupt, its other outputs finalised with the work done; the CLI exits quietly with 141
    (128 + SIGPIPE), as a tool killed by SIGPIPE would."""

    exit_code = 141
