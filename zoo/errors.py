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

import http.client
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


class AugmentError(EspzooError, ValueError):
    """An --augment spec that does not parse, or a noise folder that cannot be used (espzoo.train.augment)."""


class ScheduleError(EspzooError, ValueError):
    """A fine-tuning schedule that cannot work: --warmup-frozen, --lr-decay (espzoo.train.schedule)."""


class EvaluateError(EspzooError, ValueError):
    """A model or audio that evaluate/transcribe cannot use."""


class NoSpeechError(EvaluateError):
    """A long recording in which the voice-activity detector finds no speech (espzoo.decode.longform)."""


class AlignError(EvaluateError):
    """A transcript that cannot be aligned to its recording (decode.align): empty, or longer than the audio allows."""


class NormalizerError(EvaluateError):
    """A text normalizer espzoo does not know, or the whisper-normalizer package missing (espzoo.decode.scores)."""


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


class UpstreamUnavailableError(RuntimeError):
    """An upstream espzoo cannot build from its architecture, and s3prl could not download it."""


class UnsafeCheckpointError(BundleError):
    """A checkpoint whose pickle would build arbitrary objects (run code) instead of only tensors."""


class NotCachedError(HubError):
    """The revision asked for is not in the cache (and the Hub cannot or may not be asked)."""


class ModelNotFoundError(EvaluateError):
    """The model named is not an experiment dir, a model folder or a repo id."""


class AudioFileMissingError(EspzooError, FileNotFoundError):
    """Audio named for transcription that does not exist (still a FileNotFoundError for callers)."""


class AudioError(EvaluateError):
    """An audio file that cannot be read."""


class DecodeWorkerError(EvaluateError):
    """A decoding worker process died (killed, out of memory) before it finished."""


class RangeError(http.client.HTTPException):
    """A part's request was not answered with the bytes asked for (a transient failure: retried, then reported)."""


class RepoNotFoundError(HubError):
    pass


class RevisionNotFoundError(HubError):
    pass


class GatedRepoError(HubError):
    pass


class HubUnavailableError(HubError):
    pass


class HubDiskFullError(HubError):
    pass


class NotAsrModelError(HubError):
    pass


class UnreachableError(HubError):
    """The Hub could not be reached at all (refused, DNS, offline mode): the cache may answer instead."""

    def __init__(self, endpoint: str, reason: str):
        super().__init__(f"cannot reach the Hub at {endpoint} ({reason}); check the network or HF_ENDPOINT, "
                         "or pull while online once so the cache can answer.")
        self.reason = reason


class LanguageError(CatalogError):
    """A language that cannot be resolved; the message names the closest matches."""


class AdapterError(TransferError):
    """An adapter setting or file that cannot be used."""


class AdapterExportError(ExportError):
    """An experiment whose adapters cannot be exported as asked."""


class MissingPackageError(ModelConfigError):
    """The config's architecture needs an optional package that is not installed."""


class OutInUseError(TrainError):
    """Another espzoo run holds OUT's lock."""


class TrainDiskFullError(TrainError):
    """A write into OUT failed for lack of space (or a file size limit)."""


class NodeLostError(TrainError):
    """Another node or process of a distributed run died; this one stopped instead of waiting."""


class S2TError(BundleError):
    """An S2T model, language or prompt that cannot be used as asked (the message says what to fix)."""


class LanguageModelError(EspzooError, ValueError):
    """A language model that cannot be trained or decoded with (espzoo.models.lm): no usable text, a vocabulary that is
    not the model's, a weight out of range, an LM folder without its files."""
