"""Decoding with ESPnet's Speech2Text, word and character error rates, transcription.

    from espzoo.evaluate import error_rates, evaluate, transcribe

    error_rates(["the cat sat"], ["the cat sat down"]).wer.rate   # 1 insertion / 3 words = 0.333...
    report = evaluate("exp/bn_ft", "data/test")                   # an experiment dir, a pulled repo or a repo id
    print(report.wer.rate, report.cer.rate, report.utterances)
    transcribe("exp/bn_ft", ["a.wav", "b.flac"])                  # one string per file

Error rates follow ESPnet's scoring (egs2/TEMPLATE/asr1/asr.sh + sclite): a minimum-edit-distance alignment
of reference and hypothesis tokens, rate = (substitutions + deletions + insertions) / reference tokens,
summed over the corpus before dividing (not an average of per-utterance rates). Words are whitespace-split.
Characters are what `espnet2.bin.tokenize_text --token_type char` makes of the text: every character,
with the space between words kept as a `<space>` token, so a missing space counts as an error, as in
ESPnet's CER tables. Runs of whitespace are collapsed and the ends stripped first, on both sides, and
both are put in Unicode NFC, so that an accent typed as one code point or as a combining mark compares
equal (the one place we differ from sclite, which compares bytes).
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from espzoo._fs import replace_dir
from espzoo.bundle import config_sample_rate, resolve_config_paths
from espzoo.errors import EspzooError, EvaluateError
from espzoo.repo import model_reference

if TYPE_CHECKING:
    import numpy as np
    from espzoo.hub import Snapshot

SPACE = "<space>"


# ---------------------------------------------------------------------------------------------------------
# Error rates


@dataclass(frozen=True)
class Score:
    """Alignment counts of a hypothesis against a reference (one utterance or a whole corpus)."""

    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0
    reference_length: int = 0  # N: reference tokens (words or characters)

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def correct(self) -> int:
        return self.reference_length - self.substitutions - self.deletions

    @property
    def rate(self) -> float:
        """(S + D + I) / N. An empty reference scores 0.0 against an empty hypothesis and
        infinity against anything else (sclite reports such a case as 100% + insertions; there is no N)."""
        if self.reference_length == 0:
            return 0.0 if self.errors == 0 else math.inf
        return self.errors / self.reference_length

    def __add__(self, other: Score) -> Score:
        return Score(
            self.substitutions + other.substitutions,
            self.deletions + other.deletions,
            self.insertions + other.insertions,
            self.reference_length + other.reference_length,
        )

    def to_dict(self) -> dict[str, float | int | None]:
        rate = self.rate
        return {
            "rate": None if math.isinf(rate) else rate,
            "substitutions": self.substitutions,
            "deletions": self.deletions,
            "insertions": self.insertions,
            "reference_length": self.reference_length,
        }


@dataclass(frozen=True)
class ErrorRates:
    """Word and character scores of a set of hypotheses, plus one pair per utterance."""

    wer: Score
    cer: Score
    per_utterance: list[tuple[Score, Score]] = field(default_factory=list)  # (word, char) per pair

    def to_dict(self) -> dict[str, object]:
        return {"wer": self.wer.to_dict(), "cer": self.cer.to_dict()}


def words(text: str) -> list[str]:
    """Word tokens: whitespace-separated, in Unicode NFC (so "é" typed either way is one letter)."""
    return unicodedata.normalize("NFC", text).split()


def chars(text: str) -> list[str]:
    """Character tokens as ESPnet's char tokenizer writes them: spaces between words become `<space>`."""
    tokens: list[str] = []
    for k, word in enumerate(words(text)):
        if k:
            tokens.append(SPACE)
        tokens.extend(word)
    return tokens


def align(reference: Sequence[str], hypothesis: Sequence[str]) -> Score:
    """Levenshtein alignment counts (S, D, I) with unit costs.

    Among alignments with the fewest errors, the backtrace prefers a match or substitution, then a
    deletion, then an insertion, so that counts are deterministic (sclite's tie-breaking differs only
    in which of equally cheap paths it reports; the total, and so the rate, is the same).
    """
    import editdistance

    n, m = len(reference), len(hypothesis)
    # The distance, from C; every cell of an optimal path has |i - j| <= it (each step off the diagonal costs
    # one), so only that band of the table is filled: O(n * distance) instead of O(n * m), same counts.
    band = editdistance.eval(list(reference), list(hypothesis))
    unreachable = n + m + 1
    # cost[i][j]: edits to turn reference[:i] into hypothesis[:j] (within the band)
    cost = [[j if j <= band else unreachable for j in range(m + 1)]]
    for i in range(1, n + 1):
        row = [unreachable] * (m + 1)
        if i <= band:
            row[0] = i
        prev = cost[i - 1]
        ref_token = reference[i - 1]
        for j in range(max(1, i - band), min(m, i + band) + 1):
            diagonal = prev[j - 1] + (ref_token != hypothesis[j - 1])
            row[j] = min(diagonal, prev[j] + 1, row[j - 1] + 1)
        cost.append(row)

    substitutions = deletions = insertions = 0
    i, j = n, m
    while i > 0 or j > 0:
        if i > 0 and j > 0 and cost[i][j] == cost[i - 1][j - 1] + (reference[i - 1] != hypothesis[j - 1]):
            substitutions += reference[i - 1] != hypothesis[j - 1]
            i, j = i - 1, j - 1
        elif i > 0 and cost[i][j] == cost[i - 1][j] + 1:
            deletions += 1
            i -= 1
        else:
            insertions += 1
            j -= 1
    return Score(substitutions, deletions, insertions, n)


def error_rates(references: Sequence[str], hypotheses: Sequence[str]) -> ErrorRates:
    """Corpus WER and CER of `hypotheses` against `references` (paired by position)."""
    if len(references) != len(hypotheses):
        raise EvaluateError(
            f"got {len(references)} references but {len(hypotheses)} hypotheses; "
            "pass one hypothesis per reference."
        )
    pairs = [
        (align(words(ref), words(hyp)), align(chars(ref), chars(hyp)))
        for ref, hyp in zip(references, hypotheses, strict=True)
    ]
    wer = sum((w for w, _ in pairs), Score())
    cer = sum((c for _, c in pairs), Score())
    return ErrorRates(wer=wer, cer=cer, per_utterance=pairs)


# ---------------------------------------------------------------------------------------------------------
# Models: an experiment dir, a hub-layout folder or a repo id, opened as ESPnet's Speech2Text

# Config keys that hold paths (espzoo.bundle's docstring); only these are resolved, never token strings.


class ModelNotFoundError(EvaluateError):
    """The model named is not an experiment dir, a model folder or a repo id."""


@dataclass(frozen=True)
class ModelFiles:
    """What decoding needs, wherever the model came from. `config` has its paths made absolute."""

    source: str  # what the user named: an OUT dir, a folder, a repo id
    kind: str  # "experiment" (espzoo finetune's OUT) or "hub" (ESPnet hub layout)
    root: Path
    config: dict[str, Any]
    checkpoint: Path
    sample_rate: int
    commit: str | None = None  # the hub commit, for a pulled repo


@dataclass(frozen=True)
class DecodeOptions:
    """Beam search settings for ESPnet's Speech2Text (its own defaults are beam 20, ctc_weight 0.5)."""

    beam_size: int = 4  # small: on CPU a beam of 20 is ~5x slower for a fraction of a point of WER
    ctc_weight: float | None = None  # None: the weight the model was trained with (model_conf.ctc_weight)
    device: str = "cpu"
    threads: int | None = None  # torch intra-op threads; None leaves torch's default
    maxlenratio: float = 0.0  # 0: up to the encoder length, as ESPnet's default
    minlenratio: float = 0.0
    penalty: float = 0.0


@dataclass
class Recognizer:
    """ESPnet's Speech2Text with the rate it expects; call it on a mono float waveform at that rate."""

    speech2text: Any
    sample_rate: int
    model: ModelFiles
    options: DecodeOptions
    ctc_weight: float  # the one in use: the option, else the model's

    def __call__(self, wave: np.ndarray) -> str:
        import torch

        with torch.inference_mode(), _quiet_espnet():
            results = self.speech2text(wave)
        text, tokens, _, _ = results[0]
        # Speech2Text leaves `text` None when it has no detokenizer (bpe without a model file): join tokens.
        return text if text is not None else " ".join(tokens)


def locate_model(model: str | Path | Snapshot) -> ModelFiles:
    """Find a model's files: an experiment dir OUT, a hub-layout folder, a repo id `org/name[@rev]` (pulled),
    or a `hub.Snapshot` already pulled."""
    if not isinstance(model, (str, Path)):
        return _hub_files(Path(model.path), source=f"{model.repo_id}@{model.commit}", commit=model.commit)
    ref = model_reference(model)  # the one reading of MODEL, shared with plan/finetune (espzoo.repo)
    if ref.kind == "experiment" and (ref.path / "model.pth").is_file():  # type: ignore[operator]
        return _experiment_files(ref.path)  # type: ignore[arg-type]
    if ref.kind in ("experiment", "folder"):  # an ESPnet exp dir decodes through the bundle's own discovery
        return _hub_files(ref.path, source=str(model))  # type: ignore[arg-type]
    if ref.kind == "checkpoint":
        raise ModelNotFoundError(f"{model} is a file; pass an experiment dir, a model folder or a repo id.")
    if ref.kind == "invalid":
        raise ModelNotFoundError(ref.problem)
    from espzoo.hub import pull

    snapshot = pull(ref.repo_id, ref.revision)  # type: ignore[arg-type]
    return _hub_files(snapshot.path, source=str(model), commit=snapshot.commit)


def _experiment_files(root: Path) -> ModelFiles:
    config = _read_yaml(root / "config.yaml")
    return ModelFiles(
        source=str(root),
        kind="experiment",
        root=root.resolve(),
        config=resolve_config_paths(config, root),
        checkpoint=(root / "model.pth").resolve(),
        sample_rate=config_sample_rate(config),
    )


def _hub_files(root: Path, *, source: str, commit: str | None = None) -> ModelFiles:
    from espzoo.bundle import open_bundle

    if (root / "adapter.pth").is_file() and (root / "adapter_config.yaml").is_file():
        return _adapter_files(root, source=source, commit=commit)
    bundle = open_bundle(root)
    if bundle.task != "asr":
        raise ModelNotFoundError(f"{source} is an ESPnet {bundle.task} model; espzoo evaluates asr models only.")
    return ModelFiles(
        source=source,
        kind="hub",
        root=Path(bundle.root).resolve(),
        config=bundle.resolved_config(),
        checkpoint=Path(bundle.checkpoint),
        sample_rate=bundle.sample_rate or config_sample_rate(bundle.config),
        commit=commit,
    )


def _adapter_files(root: Path, *, source: str, commit: str | None) -> ModelFiles:
    """An adapter-only export (espzoo.lora): its config beside adapter.pth; the base comes at load time."""
    meta = _read_yaml(root / "meta.yaml")
    config_path = root / str((meta.get("yaml_files") or {}).get("asr_train_config", ""))
    if not config_path.is_file():
        raise ModelNotFoundError(f"{root}/meta.yaml names no training config (yaml_files.asr_train_config); "
                                 "re-export the adapter.")
    config = _read_yaml(config_path)
    return ModelFiles(source=source, kind="adapter", root=root.resolve(), config=resolve_config_paths(config, root),
                      checkpoint=(root / "adapter.pth").resolve(), sample_rate=config_sample_rate(config),
                      commit=commit)


def load_recognizer(model: str | Path | Snapshot | ModelFiles, options: DecodeOptions | None = None) -> Recognizer:
    """ESPnet's Speech2Text for `model` (see `locate_model`), on CPU with a small beam by default.

    The checkpoint is loaded with `weights_only=True` by espzoo, not by ESPnet (whose
    `build_model_from_file` unpickles with `weights_only=False`): hub checkpoints are untrusted input.
    """
    import tempfile

    import torch
    from espzoo._espnet import import_asr_task

    files = model if isinstance(model, ModelFiles) else locate_model(model)
    options = options or DecodeOptions()
    if options.threads:
        torch.set_num_threads(options.threads)
    with _quiet_espnet():
        import_asr_task()  # the offline NLTK setup, before asr_inference imports ESPnet's ASR chain
        from espnet2.bin.asr_inference import Speech2Text

    ctc_weight = options.ctc_weight
    if ctc_weight is None:
        ctc_weight = float((files.config.get("model_conf") or {}).get("ctc_weight", 0.5))
    with tempfile.TemporaryDirectory(prefix="espzoo-config-") as tmp, _quiet_espnet():
        # Speech2Text reads the config once, at construction; the paths inside it are absolute.
        config_path = Path(tmp) / "config.yaml"
        config_path.write_text(yaml_dump(files.config), encoding="utf-8")
        speech2text = Speech2Text(
            asr_train_config=str(config_path),
            asr_model_file=None,  # weights loaded below, safely
            device=options.device,
            beam_size=options.beam_size,
            ctc_weight=ctc_weight,
            maxlenratio=options.maxlenratio,
            minlenratio=options.minlenratio,
            penalty=options.penalty,
            nbest=1,
        )
    from espzoo.bundle import load_state_dict

    state = load_state_dict(files.checkpoint)  # weights_only: refuses a pickle that would run code
    adapted = (files.root / "adapter_config.yaml").is_file() and files.kind in ("experiment", "adapter")
    if adapted:  # LoRA: the adapters go on before the weights (else strict=False would drop them silently)
        from espzoo.lora import attach

        state = attach(speech2text.asr_model, files.root, state)
    result = speech2text.asr_model.load_state_dict(state, strict=False)
    if result.missing_keys:
        shown = ", ".join(result.missing_keys[:5])
        raise EvaluateError(
            f"{files.checkpoint} lacks {len(result.missing_keys)} tensors the model in its config needs "
            f"({shown}, ...); the checkpoint and config.yaml do not belong together."
        )
    if adapted:
        from espzoo.lora import merge_adapters

        merge_adapters(speech2text.asr_model)  # decoding then costs what the base model's does
    speech2text.asr_model.to(options.device).eval()
    return Recognizer(speech2text, files.sample_rate, files, options, ctc_weight)


@contextmanager
def _quiet_espnet() -> Iterator[None]:
    """ESPnet prints import notes to stdout (flash_attn missing) and raises FutureWarnings from torch.cuda.amp:
    moved to stderr / hidden, so that stdout stays what espzoo's commands print (JSON, transcripts)."""
    import contextlib
    import sys
    import warnings

    with contextlib.redirect_stdout(sys.stderr), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        yield


def yaml_dump(data: Any) -> str:
    import yaml

    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False)


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    with path.open(encoding="utf-8") as f:
        data = yaml.safe_load(f)
    if not isinstance(data, dict):
        raise EvaluateError(f"{path} is not an ESPnet config (expected a mapping at the top).")
    return data


# ---------------------------------------------------------------------------------------------------------
# Audio and data sets


class AudioFileMissing(EspzooError, FileNotFoundError):
    """Audio named for transcription that does not exist (still a FileNotFoundError for callers)."""


class AudioError(EvaluateError):
    """An audio file that cannot be read."""


@dataclass(frozen=True)
class Utterance:
    """One thing to decode: an id, its audio (a segment of it when `end` is set), its reference if known."""

    id: str
    audio: Path
    text: str | None = None
    start: float = 0.0  # seconds (Kaldi `segments`)
    end: float | None = None


def load_audio(path: Path, sample_rate: int, *, start: float = 0.0, end: float | None = None) -> np.ndarray:
    """A file (any format soundfile reads) as mono float32 at `sample_rate`: channels averaged, soxr-resampled."""
    import soundfile

    try:
        info = soundfile.info(str(path))
        first = int(round(start * info.samplerate))
        last = None if end is None else int(round(end * info.samplerate))
        wave, rate = soundfile.read(str(path), start=first, stop=last, dtype="float32", always_2d=True)
    except (RuntimeError, soundfile.LibsndfileError, OSError) as error:
        raise AudioError(f"cannot read audio {path} ({error}); check the path or convert it to WAV/FLAC.") from error
    wave = wave.mean(axis=1) if wave.shape[1] > 1 else wave[:, 0]
    if wave.size == 0:
        raise AudioError(f"audio {path} is empty; remove it from the data set.")
    if rate != sample_rate:
        import soxr

        wave = soxr.resample(wave, rate, sample_rate, quality="HQ").astype("float32", copy=False)
    return wave


@contextmanager
def prepared_utterances(
    data: str | Path, sample_rate: int, *, skip_bad: bool = False
) -> Iterator[list[Utterance]]:
    """The utterances of a data set with references, checked and converted by `espzoo.data.prepare`.

    `data` is a Kaldi dir (`wav.scp`, `text`, optional `segments`) or a manifest (.csv/.tsv/.jsonl with audio
    and text); bad entries raise `DataError` listing them all, unless `skip_bad` drops them. Audio that is not
    mono at `sample_rate` is converted into a temporary folder that lives as long as the context.
    """
    import tempfile

    from espzoo.data import prepare

    with tempfile.TemporaryDirectory(prefix="espzoo-eval-") as tmp:
        dataset = prepare(data, Path(tmp) / "data", sample_rate=sample_rate, skip_bad=skip_bad)
        texts = dataset.transcripts()
        yield [
            Utterance(utt_id, Path(location), texts.get(utt_id, ""))
            for utt_id, location in _two_columns(dataset.wav_scp).items()
        ]


def _two_columns(path: Path) -> dict[str, str]:
    table: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        key, _, value = line.strip().partition(" ")
        if key:
            table[key] = value.strip()
    return table


# ---------------------------------------------------------------------------------------------------------
# Decoding, evaluation, transcription

Progress = Callable[[int, int], None]  # (done, total)


def decode(
    recognizer: Recognizer,
    utterances: str | Path | Iterable[Utterance | str | Path],
    *,
    progress: Progress | None = None,
) -> list[str]:
    """Transcripts of a data set's utterances (Kaldi dir or manifest), or of audio files (any rate, any
    channels), in order.

    One utterance at a time, as ESPnet's own asr_inference does (it refuses batch_size > 1): batching the
    encoder would change results, since a conformer's convolution modules see the padding of shorter inputs.
    Use `DecodeOptions.threads` to spread each utterance over cores.
    """
    if isinstance(utterances, (str, Path)) and _is_data_set(Path(utterances)):
        with prepared_utterances(utterances, recognizer.sample_rate) as items:
            return _decode_all(recognizer, items, progress)[0]
    if isinstance(utterances, (str, Path)):
        utterances = [utterances]
    items = [u if isinstance(u, Utterance) else Utterance(Path(u).stem, Path(u)) for u in utterances]
    return _decode_all(recognizer, items, progress)[0]


def _decode_all(
    recognizer: Recognizer, items: list[Utterance], progress: Progress | None
) -> tuple[list[str], float]:
    """Hypotheses and the seconds of audio they cover."""
    hypotheses, audio_seconds = [], 0.0
    for done, utterance in enumerate(items, 1):
        wave = load_audio(utterance.audio, recognizer.sample_rate, start=utterance.start, end=utterance.end)
        audio_seconds += len(wave) / recognizer.sample_rate
        hypotheses.append(recognizer(wave))
        if progress:
            progress(done, len(items))
    return hypotheses, audio_seconds


@dataclass(frozen=True)
class UtteranceResult:
    id: str
    reference: str
    hypothesis: str
    word: Score
    char: Score

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "reference": self.reference,
            "hypothesis": self.hypothesis,
            "word": self.word.to_dict(),
            "char": self.char.to_dict(),
        }


@dataclass(frozen=True)
class EvalReport:
    """What `evaluate` measured; `to_dict()` is what `espzoo evaluate --json` prints and result.json holds."""

    model: str
    data: str
    wer: Score
    cer: Score
    rows: list[UtteranceResult]
    beam_size: int
    ctc_weight: float
    audio_seconds: float
    decode_seconds: float
    commit: str | None = None
    out_dir: Path | None = None

    @property
    def utterances(self) -> int:
        return len(self.rows)

    @property
    def real_time_factor(self) -> float:
        return self.decode_seconds / self.audio_seconds if self.audio_seconds else 0.0

    def to_dict(self, *, rows: bool = True) -> dict[str, Any]:
        data: dict[str, Any] = {
            "model": self.model,
            "commit": self.commit,
            "data": self.data,
            "wer": self.wer.to_dict()["rate"],
            "cer": self.cer.to_dict()["rate"],
            "utterances": self.utterances,
            "word": self.wer.to_dict(),
            "char": self.cer.to_dict(),
            "beam_size": self.beam_size,
            "ctc_weight": self.ctc_weight,
            "audio_seconds": round(self.audio_seconds, 3),
            "decode_seconds": round(self.decode_seconds, 3),
            "real_time_factor": round(self.real_time_factor, 4),
            "out_dir": str(self.out_dir) if self.out_dir else None,
        }
        if rows:
            data["rows"] = [row.to_dict() for row in self.rows]
        return data


def evaluate(
    model: str | Path | Snapshot | Recognizer,
    data: str | Path,
    out_dir: str | Path | None = None,
    *,
    options: DecodeOptions | None = None,
    skip_bad: bool = False,
    progress: Progress | None = None,
) -> EvalReport:
    """Decode a data set with references and score it.

    Writes `ref.trn`, `hyp.trn` (sclite's trn format), `text` (hypotheses, Kaldi style) and `result.json` to
    `out_dir`; by default, for an experiment dir, to `OUT/eval/<data name>/` (where `espzoo export` finds the
    results for the model card), and nowhere for other models. The folder is replaced whole, never half-written.
    """
    import time

    # The data is checked before the model is built (seconds), so that bad data fails fast.
    files = model.model if isinstance(model, Recognizer) else locate_model(model)
    with prepared_utterances(data, files.sample_rate, skip_bad=skip_bad) as utterances:
        recognizer = model if isinstance(model, Recognizer) else load_recognizer(files, options)
        started = time.perf_counter()
        hypotheses, audio_seconds = _decode_all(recognizer, utterances, progress)
        decode_seconds = time.perf_counter() - started

    references = [u.text or "" for u in utterances]
    rates = error_rates(references, hypotheses)
    rows = [
        UtteranceResult(u.id, ref, hyp, word, char)
        for u, ref, hyp, (word, char) in zip(utterances, references, hypotheses, rates.per_utterance, strict=True)
    ]
    if out_dir is None and files.kind == "experiment":
        out_dir = files.root / "eval" / _data_name(Path(data))
    report = EvalReport(
        model=files.source,
        data=str(data),
        wer=rates.wer,
        cer=rates.cer,
        rows=rows,
        beam_size=recognizer.options.beam_size,
        ctc_weight=recognizer.ctc_weight,
        audio_seconds=audio_seconds,
        decode_seconds=decode_seconds,
        commit=files.commit,
        out_dir=Path(out_dir) if out_dir else None,
    )
    if report.out_dir:
        write_report(report, report.out_dir)
    return report


def transcribe(
    model: str | Path | Snapshot | Recognizer,
    files: Sequence[str | Path],
    *,
    options: DecodeOptions | None = None,
    progress: Progress | None = None,
) -> list[str]:
    """One transcript per audio file, in order."""
    missing = [str(f) for f in files if not Path(f).is_file()]
    if missing:
        raise AudioFileMissing(f"no such audio file: {', '.join(missing)}; check the path.")
    recognizer = model if isinstance(model, Recognizer) else load_recognizer(model, options)
    return decode(recognizer, [Path(f) for f in files], progress=progress)


def write_report(report: EvalReport, out_dir: Path) -> Path:
    """ref.trn, hyp.trn, text and result.json, written to a temp folder that then replaces `out_dir`."""
    import json
    import shutil
    import tempfile

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        (tmp / "ref.trn").write_text("".join(f"{r.reference} ({r.id})\n" for r in report.rows), encoding="utf-8")
        (tmp / "hyp.trn").write_text("".join(f"{r.hypothesis} ({r.id})\n" for r in report.rows), encoding="utf-8")
        (tmp / "text").write_text("".join(f"{r.id} {r.hypothesis}\n" for r in report.rows), encoding="utf-8")
        (tmp / "result.json").write_text(
            json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _is_data_set(path: Path) -> bool:
    return path.is_dir() or path.suffix.lower() in (".csv", ".tsv", ".jsonl", ".json")


def _data_name(data: Path) -> str:
    return (data.name if data.is_dir() else data.stem) or "data"
