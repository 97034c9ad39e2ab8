"""Hugging Face datasets as speech data: parquet files, `datasets.save_to_disk` folders and dataset repos on the Hub.

    from espzoo.data.hfdata import open_table
    table = open_table("hf:google/fleurs:bn_in:train")    # pulled through the HF cache, offline afterwards
    table = open_table("cv/train/*.parquet")               # a glob, a folder of parquet files, or one file
    table = open_table("saved/train")                      # a datasets.save_to_disk folder (a DatasetDict's split)
    audio, text = table.pick_columns(None, None)           # `audio` and sentence/text/transcription/normalized_text
    for where, row in table.rows([audio, text]):           # a batch of rows at a time: memory stays flat
        ...

A Hub source is `hf:ORG/NAME[:CONFIG][@REV]:SPLIT`. Its files are the ones the dataset card's `configs:` list for
that config and split, else the ones the Hub's usual layouts put in the split (`data/SPLIT-*.parquet`,
`SPLIT/*.parquet`, and `CONFIG/SPLIT/*.parquet` as the Hub's parquet conversion writes). Only those files (and the
card) are downloaded, through espzoo.hub.pull (repo_type="dataset"): a pinned or cached pull asks nothing again,
HF_HUB_OFFLINE answers from the cache, large files come as parallel byte ranges and a killed pull is resumed, as for
models.

Parquet is read with pyarrow a batch of rows at a time, never as a whole table; the arrow files save_to_disk writes
are IPC streams, memory-mapped. pyarrow is espzoo's `datasets` extra: the `datasets` library itself is not needed.
espzoo.data turns the rows into utterances (embedded audio written once into its cache, then checked and resampled
like any other audio).
"""

from __future__ import annotations

import glob
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path, PurePosixPath
from typing import Any

from espzoo.errors import DataError
from espzoo.repo import parse_front_matter

HF_SCHEME = "hf:"
AUDIO_COLUMNS = ("audio",)
TEXT_COLUMNS = ("sentence", "text", "transcription", "normalized_text")
DATA_SUFFIXES = (".parquet", ".arrow")
# Rows turned into Python objects at a time: an audio row holds its encoded file (tens of KB to a few MB).
BATCH_ROWS = 32
EXTRA = "pip install 'espzoo[datasets]'"
_SPEC = re.compile(
    r"hf:(?P<repo>[^/:@\s]+/[^/:@\s]+)(?::(?P<config>[^/:@\s]+))?(?:@(?P<rev>[^:@\s]+))?:(?P<split>[^/:@\s]+)"
)
_SAVED = ("state.json", "dataset_info.json")  # what datasets.save_to_disk writes beside its arrow files


@dataclass(frozen=True)
class HfSpec:
    """`hf:ORG/NAME[:CONFIG][@REV]:SPLIT`, parsed."""

    repo_id: str
    config: str | None
    revision: str | None
    split: str

    def __str__(self) -> str:
        config = f":{self.config}" if self.config else ""
        revision = f"@{self.revision}" if self.revision else ""
        return f"{HF_SCHEME}{self.repo_id}{config}{revision}:{self.split}"


def parse_spec(text: str) -> HfSpec:
    match = _SPEC.fullmatch(text.strip())
    if match is None:
        raise DataError(f"{text!r} is not a Hub dataset reference; write it as hf:ORG/NAME[:CONFIG][@REVISION]:SPLIT, "
                        "e.g. hf:google/fleurs:bn_in:train.")
    return HfSpec(match["repo"], match["config"], match["rev"], match["split"])


def is_hf_source(source: str | Path) -> bool:
    """Whether `source` is a Hugging Face dataset (hf: reference, parquet/arrow file, glob or folder, save_to_disk
    folder) rather than a Kaldi dir or a manifest."""
    text = str(source)
    if text.startswith(HF_SCHEME):
        return True
    path = Path(text).expanduser()
    if path.is_file():
        return path.suffix.lower() in DATA_SUFFIXES
    if path.is_dir():
        if (path / "wav.scp").exists() or (path / "text").exists():
            return False
        return (path / "dataset_dict.json").is_file() or (path / "state.json").is_file() or any(
            True for _ in path.rglob("*.parquet"))
    return glob.has_magic(text)  # a Kaldi dir or manifest is never a glob: open_table keeps its parquet/arrow files


def source_name(source: str | Path) -> str:
    """A short name for a dataset source (a folder name for its evaluation results)."""
    text = str(source)
    if text.startswith(HF_SCHEME):
        spec = parse_spec(text)
        return "_".join(p for p in (spec.repo_id.split("/")[1], spec.config, spec.split) if p)
    path = Path(text.split("*", 1)[0].rstrip("/") or ".")
    return (path.stem if path.suffix.lower() in DATA_SUFFIXES else path.name) or "data"


# ---------------------------------------------------------------------------------------------------------
# A split's files


@dataclass(frozen=True)
class Table:
    """The files of one split, read a batch of rows at a time."""

    label: str  # the source as the user gave it (messages name it)
    files: tuple[Path, ...]
    base: Path  # relative audio paths are read from here
    # Where the files a row names may really lie (symlinks followed): the dataset's folder, and for a Hub snapshot
    # the blobs its links point at. Empty: `base` alone.
    inside: tuple[Path, ...] = ()

    def audio_path(self, value: str, where: str) -> str:
        """The absolute path of the file an audio cell names, relative to the dataset; DataError (one sentence)
        when it lies outside the dataset (an absolute path, `..`, a symlink leading out), decided before anything
        is opened: a downloaded dataset must not make espzoo read, train on or publish any other file."""
        name = value.strip()
        relative = PurePosixPath(name.replace("\\", "/"))
        parts = relative.parts
        outside = (not name or relative.is_absolute() or Path(name).expanduser().is_absolute() or ".." in parts
                   or re.match(r"^[A-Za-z]:", name) is not None or "\x00" in name)
        path = self.base.joinpath(*parts) if parts and not outside else self.base
        if not outside:
            real = Path(os.path.realpath(path))
            outside = not any(real.is_relative_to(root) for root in self._roots())
        if outside:
            raise DataError(f"{self.label} {where} names the audio file {name!r}, which lies outside the dataset; a "
                            "dataset's audio must be embedded in it or lie inside its folder, so fix the dataset or "
                            "list your own files in a CSV/TSV manifest.")
        return str(path)

    def _roots(self) -> tuple[Path, ...]:
        return tuple(Path(os.path.realpath(root)) for root in (self.inside or (self.base,)))

    def columns(self) -> list[str]:
        return list(_schema(self.files[0]).names)

    def pick_columns(self, audio_column: str | None, text_column: str | None) -> tuple[str, str]:
        """(audio column, text column): the ones named, else `audio` (or the one column of encoded files) and the
        first of TEXT_COLUMNS present; one sentence naming the columns there are when none fits."""
        schema = _schema(self.files[0])
        names = list(schema.names)
        shown = ", ".join(names) or "none"
        for wanted, option in ((audio_column, "--audio-column"), (text_column, "--text-column")):
            if wanted is not None and wanted not in names:
                raise DataError(f"{self.label} has no column '{wanted}' (its columns: {shown}); pass {option} with "
                                "one of them.")
        audio = audio_column or next((n for n in AUDIO_COLUMNS if n in names), None)
        if audio is None:  # a renamed Audio feature: the one struct column holding encoded files
            files = [f.name for f in schema if _holds_files(f.type)]
            audio = files[0] if len(files) == 1 else None
        if audio is None:
            raise DataError(f"{self.label} has no audio column named audio (its columns: {shown}); pass "
                            "--audio-column NAME to say which one it is.")
        return audio, self.text_column(text_column)

    def text_column(self, text_column: str | None) -> str:
        """The transcript column (the one rule, for --train and for a vocabulary's text alike): the one named, else
        the first of TEXT_COLUMNS; one sentence naming the columns there are when none fits."""
        names = self.columns()
        shown = ", ".join(names) or "none"
        if text_column is not None and text_column not in names:
            raise DataError(f"{self.label} has no column '{text_column}' (its columns: {shown}); pass --text-column "
                            "with one of them.")
        text = text_column or next((n for n in TEXT_COLUMNS if n in names), None)
        if text is None:
            raise DataError(f"{self.label} has no transcript column named {'/'.join(TEXT_COLUMNS)} (its columns: "
                            f"{shown}); pass --text-column NAME to say which one it is.")
        kind = _schema(self.files[0]).field(text).type
        if not _holds_text(kind):  # str() of a list or of bytes would be trained on as if it were words
            raise DataError(f"{self.label}'s column '{text}' holds {kind}, not text; pass --text-column with the "
                            "column that holds the transcripts as strings.")
        return text

    def transcripts(self, text_column: str | None = None) -> Iterator[str]:
        """The split's transcripts as the prepared `text` holds them (transcript()), empty ones left out; only the
        transcript column is read, a batch at a time."""
        column = self.text_column(text_column)
        for _, row in self.rows([column]):
            text = transcript(row.get(column))
            if text:
                yield text

    def rows(self, columns: Iterable[str]) -> Iterator[tuple[str, dict[str, Any]]]:
        """(where, {column: value}) for each row, in order; `where` is 'FILE row N' (1-based within the file).
        Only `columns` are read; at most BATCH_ROWS rows are held as Python objects at a time."""
        columns = list(columns)
        for file in self.files:
            number = 0
            for batch in _batches(file, columns, self.label):
                for row in batch.to_pylist():
                    number += 1
                    yield f"{file.name} row {number}", row


def _holds_text(kind: Any) -> bool:
    import pyarrow as pa

    if pa.types.is_dictionary(kind):  # a categorical column of strings
        kind = kind.value_type
    return pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_null(kind) or (
        hasattr(pa.types, "is_string_view") and pa.types.is_string_view(kind))


def _holds_files(kind: Any) -> bool:
    import pyarrow as pa

    return pa.types.is_struct(kind) and any(kind.field(i).name == "bytes" for i in range(kind.num_fields))


def open_table(source: str | Path, *, notify: Callable[[str], None] | None = None) -> Table:
    """The split `source` names: `hf:ORG/NAME[:CONFIG][@REV]:SPLIT` (pulled into the HF cache), a
    datasets.save_to_disk folder, or a parquet/arrow file, a folder of them or a glob."""
    _require_pyarrow()
    text = str(source)
    if text.startswith(HF_SCHEME):
        return _hub_table(parse_spec(text), notify)
    path = Path(text).expanduser()
    if path.is_dir():
        if (path / "dataset_dict.json").is_file():
            splits = _saved_splits(path)
            example = path / splits[0] if splits else path / "train"
            raise DataError(f"{path} is a saved DatasetDict with the splits {', '.join(splits) or 'none'}; give "
                            f"one split's folder, e.g. {example}.")
        if (path / "state.json").is_file():
            return _saved_table(path)
        files = sorted(path.rglob("*.parquet"))
        base = path
    elif path.is_file():
        files, base = [path], path.parent
    else:
        files = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if p.lower().endswith(DATA_SUFFIXES))
        base = Path(glob.escape(str(path))).parent if not files else files[0].parent
    if not files:
        raise DataError(f"{text} holds no .parquet or .arrow files; give a folder or glob of parquet files, a "
                        "datasets.save_to_disk folder, or hf:ORG/NAME:SPLIT.")
    return Table(text, tuple(f.resolve() for f in files), base.resolve())


def _saved_splits(path: Path) -> list[str]:
    try:
        splits = json.loads((path / "dataset_dict.json").read_text(encoding="utf-8")).get("splits")
    except (OSError, ValueError, AttributeError):
        splits = None
    return [str(s) for s in splits] if isinstance(splits, list) else sorted(
        p.name for p in path.iterdir() if (p / "state.json").is_file())


def _saved_table(path: Path) -> Table:
    """A datasets.save_to_disk folder: state.json lists its arrow files in order."""
    try:
        state = json.loads((path / "state.json").read_text(encoding="utf-8"))
        names = [entry["filename"] for entry in state["_data_files"]]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DataError(f"{path / 'state.json'} is not a datasets.save_to_disk state file ({err}); save the "
                        "dataset again with Dataset.save_to_disk.") from None
    files = [path / name for name in names]
    missing = [f.name for f in files if not f.is_file()]
    if missing or not files:
        raise DataError(f"{path} misses the arrow file {missing[0] if missing else '(none listed)'} its state.json "
                        "lists; save the dataset again with Dataset.save_to_disk.")
    return Table(str(path), tuple(f.resolve() for f in files), path.resolve())


def _hub_table(spec: HfSpec, notify: Callable[[str], None] | None) -> Table:
    from espzoo.hub.download import pull

    snap = pull(spec.repo_id, spec.revision, repo_type="dataset", notify=notify,
                select=lambda listing, read: select_split(spec, listing, read))
    files = tuple(snap.path / f for f in snap.files if f.lower().endswith(DATA_SUFFIXES))
    # The snapshot's files are links into the repo's blobs folder (snapshots/<commit>/.. /.. /blobs).
    return Table(str(spec), files, snap.path, (snap.path, snap.path.parent.parent / "blobs"))


def select_split(spec: HfSpec, listing: list[str], read: Callable[[str], str | None]) -> list[str]:
    """The repo files of `spec`'s config and split (and README.md, which says so): by the card's `configs:` when it
    has them, else by the Hub's usual layouts."""
    data = sorted(f for f in listing if f.lower().endswith(DATA_SUFFIXES))
    card = "README.md" in listing
    configs = [c for c in (parse_front_matter(read("README.md") or "") if card else {}).get("configs") or []
               if isinstance(c, dict)]
    if configs:
        config = _card_config(spec, configs)
        by_split = _card_splits(config.get("data_files"))
        patterns = by_split.get(spec.split, [])
        files = [f for f in data if any(fnmatchcase(f, p) for p in patterns)]
        known = sorted(by_split)
    else:
        prefix = f"{spec.config}/" if spec.config else ""
        inside = [f[len(prefix):] for f in data if f.startswith(prefix)]
        if spec.config and not inside:
            configs_seen = sorted({f.split("/")[0] for f in data if "/" in f})
            raise DataError(f"{spec.repo_id} has no config '{spec.config}' (its folders: "
                            f"{', '.join(configs_seen) or 'none'}); name one of them in hf:ORG/NAME:CONFIG:SPLIT.")
        files = [prefix + f for f in inside if _in_split(f, spec.split)]
        known = sorted({s for s in (_split_of(f) for f in inside) if s})
    if not files:
        raise DataError(f"{spec.repo_id} has no parquet or arrow files for the split '{spec.split}' (its splits: "
                        f"{', '.join(known) or 'none found'}); name one of them in {HF_SCHEME}ORG/NAME:SPLIT.")
    return (["README.md"] if card else []) + files


def _card_config(spec: HfSpec, configs: list[dict[str, Any]]) -> dict[str, Any]:
    names = [str(c.get("config_name", "default")) for c in configs]
    if spec.config is not None:
        if spec.config in names:
            return configs[names.index(spec.config)]
        raise DataError(f"{spec.repo_id} has no config '{spec.config}' (its configs: {', '.join(names)}); name one "
                        "of them in hf:ORG/NAME:CONFIG:SPLIT.")
    default = [c for c, n in zip(configs, names, strict=True) if c.get("default") is True or n == "default"]
    if default or len(configs) == 1:
        return (default or configs)[0]
    raise DataError(f"{spec.repo_id} has several configs ({', '.join(names)}); name one, e.g. "
                    f"{HF_SCHEME}{spec.repo_id}:{names[0]}:{spec.split}.")


def _card_splits(data_files: Any) -> dict[str, list[str]]:
    """A card config's data_files (a pattern, a list of them, or {split, path} entries) as split -> patterns."""
    if isinstance(data_files, str):
        return {"train": [data_files]}
    if isinstance(data_files, dict):
        data_files = [{"split": k, "path": v} for k, v in data_files.items()]
    by_split: dict[str, list[str]] = {}
    for entry in data_files if isinstance(data_files, list) else []:
        split, paths = ("train", entry) if isinstance(entry, str) else (entry.get("split", "train"), entry.get("path"))
        by_split.setdefault(str(split), []).extend([paths] if isinstance(paths, str) else list(paths or []))
    return by_split


def _in_split(path: str, split: str) -> bool:
    """The Hub's rule for files of a split: a folder named after it, or a file name starting with it."""
    return re.search(rf"(^|/)(partial-)?{re.escape(split)}([-._ 0-9/]|$)", path) is not None


def _split_of(path: str) -> str | None:
    folders = [d for d in PurePosixPath(path).parts[:-1] if d != "data"]
    if folders:
        return folders[0].removeprefix("partial-")
    return re.split(r"[-. 0-9]", PurePosixPath(path).name, maxsplit=1)[0] or None


# ---------------------------------------------------------------------------------------------------------
# Reading with pyarrow


def _require_pyarrow() -> None:
    try:
        import pyarrow.ipc
        import pyarrow.parquet  # noqa: F401 (only that it imports)
    except ImportError:
        raise DataError(f"Reading Hugging Face datasets (parquet or arrow files) needs pyarrow, which espzoo's "
                        f"datasets extra installs: {EXTRA}.") from None


def _schema(file: Path) -> Any:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        if file.suffix.lower() == ".parquet":
            return pq.read_schema(str(file))
        with pa.memory_map(str(file)) as source:
            return _arrow_reader(source).schema
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"{file} is not a readable {file.suffix[1:]} file ({err}); download or save it "
                        "again.") from None


def _arrow_reader(source: Any) -> Any:
    """save_to_disk writes IPC streams; an IPC file (random access) is read too."""
    import pyarrow as pa
    import pyarrow.ipc as ipc

    try:
        return ipc.open_stream(source)
    except pa.ArrowInvalid:
        source.seek(0)
        return ipc.open_file(source)


def _batches(file: Path, columns: list[str], label: str) -> Iterator[Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = set(_schema(file).names)
    missing = [c for c in columns if c not in names]
    if missing:
        raise DataError(f"{file.name} of {label} has no column '{missing[0]}' though the first file has; give files "
                        "of one dataset.")
    try:
        if file.suffix.lower() == ".parquet":
            # One row group is read at a time; the batches are slices of it.
            with pq.ParquetFile(str(file)) as parquet:
                yield from parquet.iter_batches(batch_size=BATCH_ROWS, columns=columns)
            return
        with pa.memory_map(str(file)) as source:  # the OS pages the file in and out: nothing is copied whole
            reader = _arrow_reader(source)
            batches = reader if isinstance(reader, pa.ipc.RecordBatchStreamReader) else (
                reader.get_batch(i) for i in range(reader.num_record_batches))
            for batch in batches:
                batch = batch.select(columns)
                for start in range(0, batch.num_rows, BATCH_ROWS):
                    yield batch.slice(start, BATCH_ROWS)
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"{file} could not be read ({err}); download or save it again.") from None


def transcript(value: Any) -> str:
    """A transcript cell as an utterance's text: whitespace runs made one space (as a Kaldi `text` line reads)."""
    return " ".join(str(value or "").split())


def audio_of(value: Any) -> tuple[bytes | None, str | None]:
    """(encoded file, path) of an audio cell: an Audio feature's {bytes, path}, or a plain path string."""
    if isinstance(value, dict):
        data, path = value.get("bytes"), value.get("path")
        return (bytes(data) if data else None), (str(path) if path else None)
    if isinstance(value, (bytes, bytearray)):
        return bytes(value) or None, None
    return None, (str(value) if value else None)
