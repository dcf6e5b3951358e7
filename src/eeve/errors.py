"""One error family. Every error a user can cause derives from :class:`EEVEError`; its message is one line naming
the problem and the fix, and the entry points (train.py, tokenize.py) print it as `error: ...` with exit code 2."""

from __future__ import annotations


class EEVEError(Exception):
    """Bad input or a state the user can fix; the message is one line naming the problem and the fix."""


class ConfigError(EEVEError, ValueError):
    """A configuration value or key is wrong."""


class CorpusError(EEVEError, ValueError):
    """Corpus or data-source input is missing, empty or malformed."""


class TokenizerBuildError(EEVEError, ValueError):
    """The base tokenizer or a tokenizer-building setting is unusable."""


class ExpansionError(EEVEError, ValueError):
    """The model cannot be expanded or split as asked (vocab mismatch, unsupported module, ...)."""


class StageError(EEVEError, RuntimeError):
    """A stage cannot run as configured (missing previous export, unreadable checkpoint, ...)."""


class NonFiniteLossError(EEVEError, RuntimeError):
    """The training loss became NaN or inf; the last good checkpoint is kept."""


class ExportError(EEVEError, RuntimeError):
    """A stage export cannot be written or read."""


class DemoDataError(EEVEError, RuntimeError):
    """The embedded demo data cannot be fetched or built."""


class SplitError(ExpansionError):
    """The model's embedding or head cannot be split into old and new rows."""


class EvalError(EEVEError, RuntimeError):
    """An evaluation cannot run as asked (model or tokenizer unreadable, missing optional package, unknown task)."""
