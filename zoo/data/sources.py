"""Reading user data as utterances: Kaldi dirs, manifests (CSV/TSV/JSONL, Common Voice and FLEURS as
downloaded), Hugging Face datasets; every problem collected with where it is.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from espzoo.data import hfdata
from espzoo.errors import DataError
from espzoo.utils import fs as _fs
from espzoo.utils.fs import atomic_write

MANIFEST_SUFFIXES = {".csv": ",", ".tsv": "\t", ".jsonl": None, ".json": None}


# Where a corpus as downloaded keeps the files its table names (Common Voice: clips/, LJSpeech: wavs/); FLEURS
# keeps them in audio/SPLIT/ beside SPLIT.tsv.
AUDIO_FOLDERS = ("clips", "audio", "wavs")


AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a")


# FLEURS' SPLIT.tsv has no header row; the transcript as written is its third column (the fourth is normalized).
FLEURS_COLUMNS = ("id", "path", "raw_transcription", "transcription", "characters", "num_samples", "gender")


AUDIO_COLUMNS = ("audio", "path", "audio_path", "audio_filepath", "file", "filename", "wav", "wav_path")


TEXT_COLUMNS = ("text", "transcript", "raw_transcription", "transcription", "sentence", "normalized_text", "label")


ID_COLUMNS = ("id", "utt_id", "utterance_id", "uttid", "key")


SPEAKER_COLUMNS = ("speaker", "speaker_id", "spk", "spk_id", "client_id")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the input, where it is and how to fix it."""

    where: str  # "wav.scp:12" (the file and 1-based line that holds the offending entry)
    what: str
    fix: str
    utt_id: str | None = None
    # A repeated id drops only the repeat (the first entry stays); every other problem drops the utterance.
    drops_utterance: bool = True

    def __str__(self) -> str:
        utt = f" [{self.utt_id}]" if self.utt_id else ""
        return f"{self.where}{utt}: {self.what} (fix: {self.fix})"


@dataclass(frozen=True)
class Dataset:
    """A prepared Kaldi data dir, ready for ESPnet (`dir/wav.scp` holds absolute paths at `sample_rate`)."""

    name: str
    dir: Path
    num_utterances: int
    total_seconds: float
    sample_rate: int
    skipped: list[str] = field(default_factory=list)  # one line per problem skip_bad let pass
    dropped: int = 0  # utterances (or manifest rows) skip_bad dropped
    converted: int = 0  # files resampled/mixed/cut in this run
    cached: int = 0  # converted files found in the cache (no work done)
    source: str = ""

    @property
    def wav_scp(self) -> Path:
        return self.dir / "wav.scp"

    @property
    def text(self) -> Path:
        return self.dir / "text"

    @property
    def speech_shape(self) -> Path:
        return self.dir / "speech_shape"

    @property
    def skipped_list(self) -> Path | None:
        """The file listing the utterances skip_bad dropped (one problem a line), None when none were."""
        return self.dir / SKIPPED_LIST if self.skipped else None

    def skipped_note(self) -> str | None:
        """'dropped N utterance(s) ... the list is ...' when skip_bad dropped any."""
        if not self.skipped:
            return None
        return (f"--skip-bad dropped {self.dropped} utterance(s) from the {self.name} set (kept "
                f"{self.num_utterances}); the list with the reasons is {self.skipped_list}")

    def texts(self) -> list[str]:
        """The transcripts, in the order of the text file (e.g. to train a BPE model on)."""
        return [line.split(maxsplit=1)[1] for line in _lines(self.text) if len(line.split(maxsplit=1)) == 2]

    def transcripts(self) -> dict[str, str]:
        """Utterance id -> transcript."""
        return dict(line.split(maxsplit=1) for line in _lines(self.text) if len(line.split(maxsplit=1)) == 2)


def load_dataset(directory: str | Path) -> Dataset:
    """The Dataset of a dir written by `prepare` (read from its dataset.json)."""
    directory = Path(directory).resolve()
    summary_path = directory / "dataset.json"
    if not summary_path.is_file():
        raise DataError(f"{directory} was not prepared by espzoo (no dataset.json); run prepare on the source data.")
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    summary["dir"] = directory
    return Dataset(**{k: v for k, v in summary.items() if k in Dataset.__dataclass_fields__})


@dataclass
class _Utterance:
    id: str
    audio: str  # an absolute path, or a shell command when is_pipe
    text: str
    speaker: str
    where: str  # file:line of the audio entry (wav.scp, segments or manifest row)
    is_pipe: bool = False
    start: float | None = None  # segment bounds in seconds (a segments file)
    end: float | None = None
    # Filled in by the probe.
    frames: int = 0
    rate: int = 0
    channels: int = 0
    format: str = ""


@dataclass
class _Reading:
    utterances: list[_Utterance]
    problems: list[Problem]
    bad_ids: set[str]


def _lines(path: Path) -> list[str]:
    return read_utf8(path).splitlines()


def read_utf8(path: Path) -> str:
    """A text file's contents; DataError naming the file, line and byte when it is not UTF-8 (a BOM is dropped)."""
    try:
        return _fs.read_utf8(path)
    except _fs.NotUtf8 as err:
        raise DataError(
            f"{err}; re-save it as UTF-8, e.g. iconv -f latin1 -t utf-8 {path.name} > {path.name}.utf8",
            [Problem(f"{path.name}:{err.line}", "not UTF-8", "re-save the file as UTF-8")],
        ) from None


def _numbered(path: Path) -> Iterable[tuple[str, int, str]]:
    """(where, lineno, stripped line) for each non-blank line."""
    for lineno, line in enumerate(_lines(path), start=1):
        if line.strip():
            yield f"{path.name}:{lineno}", lineno, line.strip()


def _read_table(path: Path, problems: list[Problem], what: str) -> dict[str, tuple[str, str]]:
    """A Kaldi `id value` file: id -> (value, where). Duplicate ids are problems."""
    table: dict[str, tuple[str, str]] = {}
    for where, _, line in _numbered(path):
        parts = line.split(maxsplit=1)
        key, value = parts[0], (parts[1].strip() if len(parts) == 2 else "")
        if key in table:
            problems.append(
                Problem(
                    where,
                    f"duplicate id (first at {table[key][1]})",
                    f"give each line of {path.name} its own id",
                    key,
                    False,
                )
            )
            continue
        table[key] = (value, where)
    if not table:
        problems.append(Problem(path.name, f"{path.name} is empty", f"add one line per utterance: '<id> <{what}>'"))
    return table


def _resolve_audio(value: str, base: Path) -> str:
    """An absolute path for a wav.scp/manifest entry: relative to `base`, else to the current directory."""
    path = Path(value).expanduser()
    if path.is_absolute():
        return str(path)
    if (base / path).exists() or not path.exists():
        return str((base / path).resolve())
    return str(path.resolve())


def _audio_entry(value: str, where: str, utt_id: str, base: Path, problems: list[Problem]) -> tuple[str, bool] | None:
    """(path or command, is_pipe) for a wav.scp value, or None with a problem recorded."""
    if not value:
        problems.append(Problem(where, "no audio path after the id", "write '<id> <path to audio file>'", utt_id))
        return None
    if value.endswith("|"):
        return value[:-1].strip(), True
    if ".ark:" in value or value.startswith("ark:"):
        problems.append(
            Problem(
                where,
                "Kaldi archive entries (file.ark:offset) are not supported",
                "dump the audio to files (e.g. wav-copy) and list their paths",
                utt_id,
            )
        )
        return None
    return _resolve_audio(value, base), False


def _read_kaldi_dir(directory: Path) -> _Reading:
    problems: list[Problem] = []
    for required, what in (("wav.scp", "audio path"), ("text", "transcript")):
        if not (directory / required).is_file():
            raise DataError(
                f"{directory} has no {required}: give a Kaldi data dir (wav.scp and text, one '<id> <{what}>' "
                "per line) or a manifest file (.csv, .tsv or .jsonl with audio and text columns).",
                [Problem(str(directory), f"no {required}", f"add {required}")],
            )
    wavs = _read_table(directory / "wav.scp", problems, "audio path")
    texts = _read_table(directory / "text", problems, "transcript")
    speakers = _read_table(directory / "utt2spk", [], "speaker") if (directory / "utt2spk").is_file() else {}

    # With a segments file, utterances are pieces of the recordings that wav.scp lists.
    segments: dict[str, tuple[str, float, float | None, str]] = {}
    if (directory / "segments").is_file():
        for where, _, line in _numbered(directory / "segments"):
            parts = line.split()
            if len(parts) != 4:
                problems.append(Problem(where, "expected '<utt id> <recording id> <start> <end>'", "fix the line"))
                continue
            seg, rec, start_s, end_s = parts
            try:
                start, end = float(start_s), float(end_s)
            except ValueError:
                problems.append(Problem(where, f"start/end are not numbers: {start_s} {end_s}", "use seconds", seg))
                continue
            if seg in segments:
                problems.append(Problem(where, "duplicate segment id", "give each segment its own id", seg, False))
            elif rec not in wavs:
                problems.append(Problem(where, f"recording '{rec}' is not in wav.scp", "add it to wav.scp", seg))
            elif start < 0 or (end != -1 and end <= start):
                problems.append(Problem(where, f"segment bounds {start}..{end} are empty or negative", "fix them", seg))
            else:
                segments[seg] = (rec, start, None if end == -1 else end, where)

    utterances: list[_Utterance] = []
    audio_ids = set(segments) if (directory / "segments").is_file() else set(wavs)
    for utt_id in sorted(audio_ids):
        if utt_id in segments:
            rec, start, end, where = segments[utt_id]
            value, _ = wavs[rec]
        else:
            (value, where), start, end = wavs[utt_id], None, None
        entry = _audio_entry(value, where, utt_id, directory, problems)
        if entry is None:
            continue
        if utt_id not in texts:
            problems.append(
                Problem(
                    where, "no transcript in text", f"add '{utt_id} <transcript>' to text or remove the line", utt_id
                )
            )
            continue
        text, text_where = texts[utt_id]
        audio, is_pipe = entry
        speaker = speakers.get(utt_id, (utt_id, ""))[0] or utt_id
        utterances.append(_Utterance(utt_id, audio, text, speaker, where, is_pipe, start, end))
        if not text:
            problems.append(
                Problem(text_where, "empty transcript", "write the transcript or drop the utterance", utt_id)
            )
    for utt_id, (_, where) in texts.items():
        if utt_id not in audio_ids:
            listing = "segments" if segments or (directory / "segments").is_file() else "wav.scp"
            problems.append(
                Problem(where, f"no audio for this transcript in {listing}", f"add it to {listing}", utt_id)
            )
    return _Reading(utterances, problems, {p.utt_id for p in problems if p.utt_id and p.drops_utterance})


def _column(names: Sequence[str], wanted: str | None, candidates: Sequence[str], what: str, source: Path) -> str | None:
    if wanted is not None:
        if wanted not in names:
            raise DataError(f"{source.name} has no column '{wanted}' (its columns: {', '.join(names)}).")
        return wanted
    lowered = {n.lower().strip(): n for n in names}
    for candidate in candidates:
        if candidate in lowered:
            return lowered[candidate]
    if what in ("audio", "text"):
        raise DataError(
            f"{source.name} has no {what} column (its columns: {', '.join(names) or 'none'}); rename the "
            f"{what} column to one of: {', '.join(candidates[:4])}."
        )
    return None


def _manifest_rows(path: Path) -> tuple[list[str], list[tuple[str, dict[str, str]]], list[Problem]]:
    """(column names, [(where, row)], problems) of a CSV/TSV/JSONL manifest."""
    rows: list[tuple[str, dict[str, str]]] = []
    problems: list[Problem] = []
    delimiter = MANIFEST_SUFFIXES[path.suffix.lower()]
    if delimiter is None:
        names: dict[str, None] = {}
        for where, _, line in _numbered(path):
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                problems.append(Problem(where, f"not a JSON object ({err.msg})", "write one JSON object per line"))
                continue
            if not isinstance(row, dict):
                problems.append(Problem(where, "not a JSON object", "write one JSON object per line"))
                continue
            names.update(dict.fromkeys(row))
            rows.append((where, {k: "" if v is None else str(v) for k, v in row.items()}))
        return list(names), rows, problems
    # A TSV has no quoting (Common Voice's sentences hold quotes: `"Sí", dijo.` is text as written, and one opening
    # quote read as CSV quoting would swallow the rows after it); a CSV is read as spreadsheets write it.
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    content = read_utf8(path)
    first = next(csv.reader(io.StringIO(content, newline=""), delimiter=delimiter, quoting=quoting), [])
    fieldnames = _headerless_columns(first, path)
    with io.StringIO(content, newline="") as f:
        reader = csv.DictReader(f, fieldnames=fieldnames, delimiter=delimiter, quoting=quoting)
        for row in reader:
            rows.append((f"{path.name}:{reader.line_num}", {k: (v or "") for k, v in row.items() if k is not None}))
        return list(reader.fieldnames or []), rows, problems


def _headerless_columns(first: list[str], path: Path) -> list[str] | None:
    """Column names for a table whose first row is already an utterance (a file name in it, as in FLEURS'
    `id, file name, raw transcription, transcription, characters, samples, gender`), None when it is a header."""
    files = [cell.strip() for cell in first if cell.strip().lower().endswith(AUDIO_SUFFIXES)]
    if not files:
        return None
    if len(first) == len(FLEURS_COLUMNS):
        return list(FLEURS_COLUMNS)
    if len(first) == 2:
        return ["audio", "text"] if first[0].strip() == files[0] else ["text", "audio"]
    raise DataError(f"{path} has no header row (its first row names the file {files[0]}); add a first row naming "
                    "the columns, e.g. audio and text.")


def _audio_base(manifest: Path, values: list[str]) -> Path:
    """The folder a manifest's relative audio paths are read from: beside it, else the audio folder of a corpus as
    downloaded (Common Voice's clips/, FLEURS' audio/SPLIT/, an audio/ or wavs/ folder): the first where one of
    the first rows' files is found."""
    here = manifest.parent
    relative = [v for v in (v.strip() for v in values) if v and not v.endswith("|") and
                not Path(v).expanduser().is_absolute()][:20]
    for folder in (here, *(here / name for name in (f"audio/{manifest.stem}", *AUDIO_FOLDERS))):
        if any((folder / v).exists() for v in relative):
            return folder
    return here


def find_manifest(source: Path) -> Path:
    """`source`, or for a path that does not exist the manifest it names without its suffix (a corpus folder and a
    split: `cv-corpus-X/es/train` is `cv-corpus-X/es/train.tsv`)."""
    if source.exists():
        return source
    found = [source.with_name(source.name + suffix) for suffix in MANIFEST_SUFFIXES]
    found = [path for path in found if path.is_file()]
    return found[0] if len(found) == 1 else source


def manifest_texts(path: Path, text_column: str | None = None) -> list[str]:
    """The transcripts of a CSV/TSV/JSONL manifest (its text column, found as for --train), as the prepared `text`
    holds them; empty ones left out."""
    names, rows, _ = _manifest_rows(path)
    column = _column(names, text_column, TEXT_COLUMNS, "text", path)
    texts = (" ".join(row.get(column or "", "").split()) for _, row in rows)
    return [text for text in texts if text]


def _stem(value: str, *, whole: bool = False) -> str:
    """An utterance id from an audio path: its file name without suffix ("" for an empty value); `whole`: the
    path's parts joined by '-' (where file names repeat)."""
    value = value.strip()
    if not value or not Path(value).name:
        return ""
    path = Path(value)
    path = path.with_name(path.name.rsplit(".", 1)[0] or path.name)
    return str(path).strip("/").replace("/", "-") if whole else path.name


def _read_manifest(path: Path, audio_column: str | None, text_column: str | None, id_column: str | None) -> _Reading:
    names, rows, problems = _manifest_rows(path)
    if not rows:
        raise DataError(f"{path} holds no rows; write one row per utterance with an audio path and its text.")
    audio_col = _column(names, audio_column, AUDIO_COLUMNS, "audio", path)
    text_col = _column(names, text_column, TEXT_COLUMNS, "text", path)
    id_col = _column(names, id_column, ID_COLUMNS, "id", path)
    speaker_col = _column(names, None, SPEAKER_COLUMNS, "speaker", path)
    assert audio_col is not None and text_col is not None

    base = _audio_base(path, [row.get(audio_col, "") for _, row in rows])
    # Without an id column, ids come from the file names (their relative path where names repeat).
    stems = [_stem(row.get(audio_col, "")) for _, row in rows]
    named = [stem for stem in stems if stem]
    unique_stems = len(set(named)) == len(named)
    utterances: list[_Utterance] = []
    seen: dict[str, str] = {}
    for (where, row), stem in zip(rows, stems, strict=True):
        value = row.get(audio_col, "").strip()
        if id_col is not None and row.get(id_col, "").strip():
            utt_id = row[id_col].strip()
        else:
            utt_id = stem if unique_stems or not stem else _stem(value, whole=True)
        utt_id = "_".join(utt_id.split())  # Kaldi ids cannot hold whitespace
        if not value:
            problems.append(Problem(where, "no audio path", f"fill the '{audio_col}' column or drop the row",
                                    utt_id or None))
            continue
        if not utt_id:
            problems.append(Problem(where, "no audio path and no id", f"fill the '{audio_col}' column"))
            continue
        if utt_id in seen:
            problems.append(
                Problem(where, f"duplicate id (first at {seen[utt_id]})", "give each row its own id", utt_id, False)
            )
            continue
        seen[utt_id] = where
        entry = _audio_entry(value, where, utt_id, base, problems)
        if entry is None:
            continue
        text = " ".join(row.get(text_col, "").split())
        speaker = "_".join(row.get(speaker_col, "").split()) if speaker_col else ""
        utterances.append(_Utterance(utt_id, entry[0], text, speaker or utt_id, where, entry[1]))
        if not text:
            problems.append(Problem(where, "empty transcript", f"fill the '{text_col}' column or drop the row", utt_id))
    return _Reading(utterances, problems, {p.utt_id for p in problems if p.utt_id and p.drops_utterance})


# Encoded audio is named by its first bytes when its path does not say (soundfile reads by content anyway).
_MAGIC = ((b"RIFF", ".wav"), (b"fLaC", ".flac"), (b"OggS", ".ogg"), (b"ID3", ".mp3"), (b"\xff\xfb", ".mp3"))


def _read_hf(source: str, audio_column: str | None, text_column: str | None, id_column: str | None,
             extract_dir: Path, written: list[Path]) -> _Reading:
    """The rows of a Hugging Face dataset as utterances, read a batch at a time; embedded audio is written to
    `extract_dir` under the hash of its bytes (a rerun writes nothing), so only ids and texts stay in memory."""
    table = hfdata.open_table(source)
    audio_col, text_col = table.pick_columns(audio_column, text_column)
    names = table.columns()
    label = Path(table.label)
    id_col = _column(names, id_column, ID_COLUMNS, "id", label)
    speaker_col = _column(names, None, SPEAKER_COLUMNS, "speaker", label)
    wanted = list(dict.fromkeys(c for c in (audio_col, text_col, id_col, speaker_col) if c))
    problems: list[Problem] = []
    rows: list[tuple[str, str | None, str, str, str, str]] = []  # (where, audio, text, id value, stem, speaker)
    for where, row in table.rows(wanted):
        data, path = hfdata.audio_of(row.get(audio_col))
        if data:
            audio = _extract(data, path, extract_dir, written)
        else:  # a file the dataset names: inside it, or refused before it is opened
            audio = table.audio_path(path, where) if path else None
        ident = "" if id_col is None or row.get(id_col) is None else "_".join(str(row[id_col]).split())
        speaker = "" if speaker_col is None or row.get(speaker_col) is None else "_".join(str(row[speaker_col]).split())
        text = hfdata.transcript(row.get(text_col))
        rows.append((where, audio, text, ident, _stem(path or ""), speaker))
    if not rows:
        raise DataError(f"{source} holds no rows; give a split with at least one utterance.")
    ids = _hf_ids(rows, explicit=id_column is not None)
    utterances: list[_Utterance] = []
    seen: dict[str, str] = {}
    for (where, audio, text, _, _, speaker), utt_id in zip(rows, ids, strict=True):
        if utt_id in seen:
            problems.append(Problem(where, f"duplicate id (first at {seen[utt_id]})", "give each row its own id",
                                    utt_id, False))
            continue
        seen[utt_id] = where
        if audio is None:
            problems.append(Problem(where, "no audio", f"fill the '{audio_col}' column or drop the row", utt_id))
            continue
        utterances.append(_Utterance(utt_id, audio, text, speaker or utt_id, where))
        if not text:
            problems.append(Problem(where, "empty transcript", f"fill the '{text_col}' column or drop the row", utt_id))
    return _Reading(utterances, problems, {p.utt_id for p in problems if p.utt_id and p.drops_utterance})


def _hf_ids(rows: list[tuple[str, str | None, str, str, str, str]], *, explicit: bool) -> list[str]:
    """Utterance ids: the id column's when asked for or unique, else the audio file names when unique (a dataset
    made from a Kaldi dir keeps its ids), else the row's place (FLEURS' `id` repeats across speakers)."""
    idents, stems = [r[3] for r in rows], [r[4] for r in rows]
    if explicit or (all(idents) and len(set(idents)) == len(idents)):
        return [ident or f"row{n:07d}" for n, ident in enumerate(idents, start=1)]
    if all(stems) and len(set(stems)) == len(stems):
        return stems
    return [f"row{n:07d}" for n in range(1, len(rows) + 1)]


def _extract(data: bytes, path: str | None, extract_dir: Path, written: list[Path]) -> str:
    """The file holding the encoded audio `data`, written once under the hash of its contents (and then added to
    `written`)."""
    suffix = Path(path or "").suffix.lower()
    if not suffix or len(suffix) > 5:
        suffix = next((ext for magic, ext in _MAGIC if data.startswith(magic)), ".audio")
    digest = hashlib.sha256(data).hexdigest()
    target = extract_dir / digest[:2] / f"{digest[2:26]}{suffix}"
    if not target.is_file() or target.stat().st_size != len(data):
        atomic_write(target, lambda tmp: tmp.write_bytes(data))
        written.append(target)
    return str(target)


def _read_local(source: Path, audio_column: str | None, text_column: str | None, id_column: str | None) -> _Reading:
    if source.is_dir():
        return _read_kaldi_dir(source)
    if source.is_file() and source.suffix.lower() in MANIFEST_SUFFIXES:
        return _read_manifest(source, audio_column, text_column, id_column)
    if source.is_file():
        raise DataError(
            f"{source} is neither a Kaldi data dir nor a manifest; give a dir with wav.scp and text, "
            "a .csv/.tsv/.jsonl file with audio and text columns, or a Hugging Face dataset (parquet files, a "
            "save_to_disk folder, hf:ORG/NAME:SPLIT)."
        )
    raise DataError(f"{source} does not exist; give a Kaldi data dir, a manifest file or a Hugging Face dataset.")


SKIPPED_LIST = "skipped.txt"
