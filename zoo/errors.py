"""Every failure a user can act on is an `EspzooError`; the CLI maps them to one line and an exit code in one place.

    from espzoo.errors import EspzooError, BundleError
    try:
        open_bundle(path)
    except EspzooError as err:       # any domain: hub, bundle, transfer, data, trainer, evaluate, export, ...
        print(err)                    # one sentence naming the problem and the fix

Each domain keeps its own class (importable from its module too: `espzoo.hub.HubError` is this `HubError`).
Classes that used to derive from ValueError/RuntimeError still do, so code that caught those keeps working.
Nothing here imports anything heavy: `espzoo search` and `--help` load this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class EspzooError(Exception):
    """A failure the user can act on; str() is one sentence naming the problem and the fix."""

    exit_code: int = 1  # what `espzoo` exits with when this escapes a command


class HubError(EspzooError):
    """A pull/verify/rm/catalog-refresh failure (unknown repo, revision, gated, offline, disk full)."""


class BundleError(EspzooError):
    """A folder that cannot be used as an ESPnet ASR/S2T model; the message names the problem and the fix."""


class CatalogError(EspzooError, ValueError):
    """A catalog file that does not follow the schema; the message names the entry and the field."""


class DataError(EspzooError, ValueError):
    """The input data cannot be used as it is; `problems` lists every offending entry (espzoo.data.Problem)."""

    def __init__(self, message: str, problems: Sequence[Any] = ()) -> None:
        super().__init__(message)
        self.problems = list(problems)


class VocabularyError(EspzooError, ValueError):
    """A vocabulary spec or token list that cannot be used."""


class ModelConfigError(EspzooError, ValueError):
    """An ESPnet config from which no model can be built."""


class TransferError(EspzooError, ValueError):
    """A spec, source or plan that cannot be carried out (the message says what to fix)."""


class TrainError(EspzooError, RuntimeError):
    """Training could not start or did not finish; the message says why and what to do."""


class TrainInterrupted(TrainError):
    """The user stopped training (Ctrl-C / SIGTERM); OUT holds resumable state."""

    exit_code = 130  # as a shell reports a process ended by SIGINT


class EvaluateError(EspzooError, ValueError):
    """A model or audio that evaluate/transcribe cannot use."""


class NormalizerError(EvaluateError):
    """A text normalizer espzoo does not know, or the whisper-normalizer package missing (espzoo.scores)."""


class EmptyReferenceError(EvaluateError):
    """References with no words left once normalized (all punctuation, or only a bracketed tag)."""


class NotComparableError(EvaluateError):
    """Two evaluations that were not made on the same utterances and references."""


class ReportDirError(EvaluateError):
    """A --report folder that holds other files (or is a file): refused unless --force."""


class ExportError(EspzooError, ValueError):
    """An experiment that cannot be exported as an ESPnet Hub repo."""


class PushError(EspzooError):
    """An upload to the Hub (or a mirror) that failed: refused token, unknown repo or branch, unreachable server."""


class MirrorError(EspzooError):
    """A request the mirror answers with an error: status, X-Error-Code and a message."""

    def __init__(self, status: int, code: str | None, message: str, commit: str | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.commit = status, code, message, commit


class LanguageModelError(EspzooError, ValueError):
    """A language model that cannot be trained or decoded with (espzoo.lm): no usable text, a vocabulary that is
    not the model's, a weight out of range, an LM folder without its files."""
