"""Vocabularies in ESPnet's conventions, built from a user's transcripts, and the old→new token map.

A token list follows what ESPnet's `asr.sh` writes with `espnet2.bin.tokenize_text --write_vocabulary true
--add_symbol '<blank>:0' --add_symbol '<unk>:1' --add_symbol '<sos/eos>:-1'`: `<blank>` first, `<unk>` second,
the text's tokens by descending count (ties in order of first appearance), `<sos/eos>` last. Char tokens spell
a space `<space>`; sentencepiece marks a word start with `▁`, so a char model's `<space>` and a sentencepiece
model's lone `▁` are the same token (the map below treats them so).

Spec strings (the `--vocab` option):
    keep                  the pretrained vocabulary, unchanged
    char:TEXT             characters of TEXT
    bpe:N:TEXT            sentencepiece BPE with N units trained on TEXT (asr.sh's options)
    unigram:N:TEXT        sentencepiece unigram, the same way
    bpe:N / unigram:N / char   the same on texts given by the caller (finetune: the training transcripts)
    PATH/tokens.txt       a token list (one token a line; a `bpe.model` beside it is used for `▁` tokens)
    PATH/bpe.model        a sentencepiece model (its pieces become the token list)
TEXT is a Kaldi data dir (its `text`), a Kaldi `text` file (`utt-id words...`), plain text, one line each, or a
Hugging Face dataset in any form `--train` takes (parquet files, a save_to_disk folder, hf:ORG/NAME[:CONFIG][@REV]:
SPLIT; espzoo.data.hfdata), whose transcript column is found as for `--train` (the usual names, or `--text-column`).
"""

from __future__ import annotations

import collections
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from espzoo.data import hfdata
from espzoo.errors import VocabularyError
from espzoo.utils import fs as _fs

BLANK, UNK, SOS_EOS = "<blank>", "<unk>", "<sos/eos>"
SPECIALS = (BLANK, UNK, SOS_EOS)
SPACE = "<space>"
WORD_START = "\u2581"  # sentencepiece's "▁"
# Tokens that mean the same thing under different tokenizers (matched after an exact match fails).
_ALIASES = {SPACE: WORD_START, WORD_START: SPACE}

MAX_UNITS = 1_000_000  # sentencepiece's vocab_size is an int32, and no text supports more pieces than this
VocabKind = Literal["keep", "char", "bpe", "unigram", "tokens", "bpemodel"]


@dataclass(frozen=True)
class VocabSpec:
    kind: VocabKind
    units: int | None = None  # for bpe / unigram
    path: Path | None = None  # the text (char/bpe/unigram), the token list or the sentencepiece model

    def __str__(self) -> str:
        parts = [self.kind] if self.kind not in ("tokens", "bpemodel") else []
        parts += [str(self.units)] if self.units is not None else []
        parts += [str(self.path)] if self.path is not None else []
        return ":".join(parts)


@dataclass
class Vocabulary:
    """A model's token list with how to tokenize text for it, and how it relates to a pretrained one."""

    tokens: list[str]
    token_type: str  # ESPnet's token_type: char, bpe, word, ...
    bpemodel: Path | None = None
    # Index in the pretrained token list -> index in this one, for every token both share (by string).
    old_to_new: dict[int, int] = field(default_factory=dict)
    # Share of this vocabulary's tokens (special symbols aside) that the pretrained vocabulary has.
    new_in_old: float | None = None
    # Share of the training text's token occurrences (tokenized for this vocabulary) that are shared tokens.
    text_coverage: float | None = None
    source: str = "pretrained"  # the spec it came from

    @property
    def shared(self) -> int:
        return len(self.old_to_new)

    def overlap(self) -> dict[str, Any]:
        """The overlap report (plain data, for tables and JSON)."""
        return {
            "source": self.source,
            "token_type": self.token_type,
            "size": len(self.tokens),
            "shared_tokens": self.shared,
            "new_in_old": self.new_in_old,
            "text_coverage": self.text_coverage,
            "bpemodel": str(self.bpemodel) if self.bpemodel else None,
        }


def parse_vocab_spec(spec: str) -> VocabSpec:
    """Parse a `--vocab` string (see the module docstring); raises VocabularyError with the accepted forms."""
    text = spec.strip()
    if text == "keep":
        return VocabSpec("keep")
    kind, _, rest = text.partition(":")
    if kind == "char":
        return VocabSpec("char", path=Path(rest) if rest else None)
    if kind in ("bpe", "unigram"):
        units, _, path = rest.partition(":")
        # isascii: '²'.isdigit() is True, but int('²') fails
        if not (units.isascii() and units.isdigit()) or not 1 <= int(units) <= MAX_UNITS:
            raise VocabularyError(
                f"--vocab {spec!r}: the number of units must be a positive integer up to {MAX_UNITS}, e.g. {kind}:500."
            )
        return VocabSpec(kind, units=int(units), path=Path(path) if path else None)  # type: ignore[arg-type]
    path = Path(text)
    if path.is_file():
        return VocabSpec("bpemodel" if path.suffix == ".model" else "tokens", path=path)
    raise VocabularyError(
        f"--vocab {spec!r} is neither an existing token list / bpe.model file nor one of: "
        "keep, char:TEXT, bpe:N:TEXT, unigram:N:TEXT."
    )


def read_texts(path: Path, text_column: str | None = None) -> list[str]:
    """Transcripts from a Kaldi data dir, a Kaldi `text` file (ids stripped), a plain text file (one a line), a
    CSV/TSV/JSONL manifest or a Hugging Face dataset (its `text_column`, else the usual transcript column, read as
    `--train` reads it)."""
    if hfdata.is_hf_source(path):  # before Path(): an hf: reference is not a file
        texts = list(hfdata.open_table(str(path)).transcripts(text_column))
        if not texts:
            raise VocabularyError(f"{path} has no transcripts; a vocabulary needs some text to learn from.")
        return texts
    from espzoo.data.sources import MANIFEST_SUFFIXES, find_manifest, manifest_texts

    path = find_manifest(Path(path))  # a corpus folder and a split (cv-corpus-X/es/train) is its train.tsv
    if path.is_file() and path.suffix.lower() in MANIFEST_SUFFIXES:  # its text column, not its raw lines
        texts = manifest_texts(path, text_column)
        if not texts:
            raise VocabularyError(f"{path} has no transcripts; a vocabulary needs some text to learn from.")
        return texts
    kaldi = path.is_dir() or path.name == "text"
    if path.is_dir():
        path = path / "text"
    if not path.is_file():
        raise VocabularyError(f"The text file {path} does not exist; give a transcript file or a Kaldi data dir.")
    lines = _read_utf8(path).splitlines()
    # As tokenize_text --field 2- does for a Kaldi text: drop the id, join the words with single spaces.
    texts = [" ".join(line.split()[1:]) if kaldi else line.rstrip() for line in lines]
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise VocabularyError(f"The text file {path} has no transcripts; a vocabulary needs some text to learn from.")
    return texts


def pretrained_vocabulary(tokens: Sequence[str], token_type: str, bpemodel: Path | str | None) -> Vocabulary:
    """The vocabulary a pretrained model was trained with (every token maps to itself)."""
    return Vocabulary(
        tokens=list(tokens),
        token_type=token_type,
        bpemodel=Path(bpemodel) if bpemodel else None,
        old_to_new={i: i for i in range(len(tokens))},
        new_in_old=1.0,
    )


def build_vocabulary(
    spec: str | VocabSpec,
    texts: Sequence[str] | None = None,
    old: Vocabulary | None = None,
    *,
    workdir: Path | None = None,
    text_column: str | None = None,
) -> Vocabulary:
    """Build the vocabulary `spec` asks for, mapped against the pretrained `old` one.

    `texts` are transcripts given by the caller (used when the spec names no text file, and for the coverage
    report); a trained sentencepiece model is written to `workdir` (a fresh temporary folder when None).
    `text_column` names the transcript column of a dataset TEXT (read_texts).
    """
    spec = parse_vocab_spec(spec) if isinstance(spec, str) else spec
    if spec.kind in ("char", "bpe", "unigram"):
        if spec.path is not None:
            texts = read_texts(spec.path, text_column)
        elif not texts:
            raise VocabularyError(f"--vocab {spec} needs text: write {spec}:TEXTFILE, or give training transcripts.")
    texts = list(texts or [])

    if spec.kind == "keep":
        if old is None:
            raise VocabularyError("--vocab keep needs the pretrained model's vocabulary.")
        vocab = Vocabulary(list(old.tokens), old.token_type, old.bpemodel)
    elif spec.kind == "char":
        vocab = Vocabulary(_token_list(tokenize(texts, "char")), "char")
    elif spec.kind in ("bpe", "unigram"):
        model = _train_sentencepiece(texts, spec, workdir)
        vocab = Vocabulary(_token_list(tokenize(texts, "bpe", model)), "bpe", model)
    elif spec.kind == "bpemodel":
        vocab = _from_sentencepiece_model(spec.path)  # type: ignore[arg-type]
    else:
        vocab = _from_token_list(spec.path)  # type: ignore[arg-type]
    vocab.source = str(spec)
    if old is not None:
        vocab.old_to_new = token_map(old.tokens, vocab.tokens)
        plain = [t for t in vocab.tokens if t not in SPECIALS]
        shared = {vocab.tokens[j] for j in vocab.old_to_new.values()}
        vocab.new_in_old = sum(t in shared for t in plain) / len(plain) if plain else 1.0
        if texts:
            vocab.text_coverage = _coverage(texts, vocab, shared)
    return vocab


def token_map(old_tokens: Sequence[str], new_tokens: Sequence[str]) -> dict[int, int]:
    """Old index -> new index for each token both lists hold: by exact string, then `<space>` ≡ `▁`."""
    old_index = {t: i for i, t in enumerate(old_tokens)}
    mapping: dict[int, int] = {}
    for j, token in enumerate(new_tokens):
        i = old_index.get(token)
        if i is None and token in _ALIASES and _ALIASES[token] not in new_tokens:
            i = old_index.get(_ALIASES[token])
        if i is not None and i not in mapping:
            mapping[i] = j
    return mapping


def tokenize(texts: Iterable[str], token_type: str, bpemodel: Path | None = None) -> list[list[str]]:
    """Tokenize each text with ESPnet's own tokenizer classes (as espnet2.bin.tokenize_text does)."""
    if token_type == "char":
        from espnet2.text.char_tokenizer import CharTokenizer

        tokenizer: Any = CharTokenizer(non_linguistic_symbols=None, space_symbol=SPACE)
    elif token_type == "bpe":
        from espnet2.text.sentencepiece_tokenizer import SentencepiecesTokenizer

        if bpemodel is None:
            raise VocabularyError("A bpe vocabulary needs its sentencepiece model (bpe.model) to tokenize text.")
        tokenizer = SentencepiecesTokenizer(str(bpemodel))
    elif token_type == "word":
        from espnet2.text.word_tokenizer import WordTokenizer

        tokenizer = WordTokenizer()
    else:
        raise VocabularyError(f"Token type {token_type!r} is not supported here; use char, bpe or word.")
    try:
        return [tokenizer.text2tokens(text.rstrip()) for text in texts]
    except (OSError, RuntimeError) as err:  # sentencepiece loads the model at the first text
        raise VocabularyError(
            f"{bpemodel} is not a sentencepiece model ({str(err).strip().splitlines()[-1]}); "
            "replace it with the bpe.model the tokens were made with."
        ) from None


def _read_utf8(path: Path) -> str:
    try:
        return _fs.read_utf8(path)
    except _fs.NotUtf8 as err:
        raise VocabularyError(f"{err}; re-save it as UTF-8.") from None


def _token_list(tokenized: Iterable[Sequence[str]]) -> list[str]:
    counts: collections.Counter[str] = collections.Counter()
    for tokens in tokenized:
        counts.update(tokens)
    # tokenize_text: sorted by descending count; sorted() is stable, so ties keep first-appearance order.
    words = [w for w, _ in sorted(counts.items(), key=lambda item: -item[1]) if w not in SPECIALS]
    return [BLANK, UNK, *words, SOS_EOS]


def _coverage(texts: Sequence[str], vocab: Vocabulary, shared: set[str]) -> float:
    occurrences = [t for tokens in tokenize(texts, vocab.token_type, vocab.bpemodel) for t in tokens]
    if not occurrences:
        return 0.0
    return sum(t in shared for t in occurrences) / len(occurrences)


def _train_sentencepiece(texts: Sequence[str], spec: VocabSpec, workdir: Path | None) -> Path:
    """Train sentencepiece as asr.sh does (character_coverage 1.0, all sentences); return the model path."""
    import sentencepiece as spm

    workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="espzoo-vocab-"))
    workdir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".spm-", dir=workdir))
    try:
        train_text = tmp / "train.txt"
        train_text.write_text("\n".join(texts) + "\n", encoding="utf-8")
        try:
            spm.SentencePieceTrainer.train(
                input=str(train_text),
                model_prefix=str(tmp / "bpe"),
                vocab_size=spec.units,
                model_type=spec.kind,
                character_coverage=1.0,
                input_sentence_size=100000000,
                minloglevel=2,
            )
        except RuntimeError as err:
            raise VocabularyError(_sentencepiece_message(spec, str(err))) from err
        model = workdir / "bpe.model"
        os.replace(tmp / "bpe.model", model)  # complete before it appears under its final name
        return model
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _sentencepiece_message(spec: VocabSpec, error: str) -> str:
    limit = re.search(r"value <= (\d+)", error)
    where = f"the text {spec.path}" if spec.path else "the given transcripts"
    if limit:
        return f"--vocab {spec}: {where} supports at most {limit.group(1)} {spec.kind} units; use a smaller N."
    smaller = re.search(r"required_chars\. (\d+) vs (\d+)", error)
    if smaller:
        chars = smaller.group(2)
        return f"--vocab {spec}: {where} has {chars} distinct characters, more than {spec.units} units; use a larger N."
    return f"--vocab {spec}: sentencepiece could not train on {where} ({error.strip().splitlines()[-1]})."


def _from_sentencepiece_model(path: Path) -> Vocabulary:
    import sentencepiece as spm

    processor = spm.SentencePieceProcessor()
    try:
        processor.load(str(path))
    except (OSError, RuntimeError) as err:
        raise VocabularyError(f"{path} is not a sentencepiece model ({err}); give a bpe.model file.") from err
    pieces = [
        processor.id_to_piece(i)
        for i in range(processor.get_piece_size())
        if not (processor.is_control(i) or processor.is_unknown(i))
    ]
    return Vocabulary([BLANK, UNK, *[p for p in pieces if p not in SPECIALS], SOS_EOS], "bpe", Path(path))


def _from_token_list(path: Path) -> Vocabulary:
    tokens = [line.strip() for line in _read_utf8(Path(path)).splitlines()]
    tokens = [t for t in tokens if t]
    if not tokens:
        raise VocabularyError(f"The token list {path} is empty; give one token a line.")
    if any(len(t.split()) > 1 for t in tokens):
        raise VocabularyError(
            f"{path} looks like a transcript file, not a token list (lines hold spaces); "
            f"use --vocab char:{path} or bpe:N:{path}."
        )
    duplicates = [t for t, n in collections.Counter(tokens).items() if n > 1]
    if duplicates:
        raise VocabularyError(f"The token list {path} repeats {duplicates[:5]}; each token must appear once.")
    if tokens[0] != BLANK or tokens[-1] != SOS_EOS or UNK not in tokens:
        raise VocabularyError(
            f"The token list {path} must start with {BLANK}, hold {UNK} and end with {SOS_EOS} (ESPnet's convention)."
        )
    if any(t.startswith(WORD_START) for t in tokens):
        model = Path(path).with_name("bpe.model")
        if not model.is_file():
            raise VocabularyError(
                f"The token list {path} holds sentencepiece tokens but no bpe.model lies beside it; "
                "put the model there or pass --vocab PATH/bpe.model."
            )
        return Vocabulary(tokens, "bpe", model)
    plain = [t for t in tokens if t not in SPECIALS and t != SPACE]
    return Vocabulary(tokens, "char" if all(len(t) == 1 for t in plain) else "word")


# ---------------------------------------------------------------------------------------------------- new rows

_SYMBOL = re.compile(r"^<[^<>\s]+>$")  # `<mask>`, `<sos>`, an S2T `<lang>`: symbols, not text to spell


def spell(token: str, old: Vocabulary) -> tuple[int, ...] | None:
    """The indices of the old tokens that spell `token` as the old vocabulary tokenizes its text (a new piece
    `▁la` is `<space>`, `l`, `a` in a char vocabulary; the old pieces sentencepiece gives in a BPE one), else its
    text without diacritics (`ñ` as `n`), or None when some of it is still unknown to the old vocabulary or
    `token` is a symbol like `<mask>`."""
    return Speller(old)(token)


class Speller:
    """`spell` for many tokens of one old vocabulary (its sentencepiece model loaded once)."""

    def __init__(self, old: Vocabulary) -> None:
        self.old = old
        self.index = {t: i for i, t in enumerate(old.tokens)}
        self._pieces: Any = None
        if old.token_type == "bpe" and old.bpemodel is not None and Path(old.bpemodel).is_file():
            self._pieces = _literal_processor(Path(old.bpemodel))

    def __call__(self, token: str) -> tuple[int, ...] | None:
        if token in SPECIALS or _SYMBOL.match(token):
            return None
        text = token.replace(WORD_START, " ")
        spelled = self._spell(text)
        plain = _without_marks(text)
        # A letter the old vocabulary lacks is spelled by its base letter (Spanish `ñ` by English `n`, `á` by `a`):
        # the nearest sound the model knows, where the mean of all rows would be none in particular.
        return spelled if spelled is not None or plain == text else self._spell(plain)

    def _spell(self, text: str) -> tuple[int, ...] | None:
        if self.old.token_type == "char":
            parts = [SPACE if c == " " else c for c in text]
        elif self.old.token_type == "word":
            parts = text.split()
        elif self._pieces is not None:
            parts = self._pieces.encode(text, out_type=str)
        else:
            return None
        found = [self._find(p) for p in parts]
        if not found or any(i is None for i in found):
            return None
        return tuple(found)  # type: ignore[arg-type]

    def _find(self, part: str) -> int | None:
        i = self.index.get(part)
        if i is None and part in _ALIASES:
            i = self.index.get(_ALIASES[part])
        return None if i is None or self.old.tokens[i] in SPECIALS else i


def _without_marks(text: str) -> str:
    """`text` with its letters' diacritics removed (Unicode NFD, combining marks dropped): `año` -> `ano`."""
    import unicodedata

    return "".join(c for c in unicodedata.normalize("NFD", text) if not unicodedata.combining(c))


def _literal_processor(bpemodel: Path) -> Any:
    """The sentencepiece model with its text normalization's two whitespace rules off (no `▁` put before the
    text, no spaces stripped), so a piece's text is encoded as it stands: `la` (word-inside) stays `l`,`a` or
    `la`, never the word-start `▁la` the model would otherwise make of it."""
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as model_pb2

    proto = model_pb2.ModelProto()
    try:
        proto.ParseFromString(bpemodel.read_bytes())
    except Exception as err:  # noqa: BLE001 (protobuf's DecodeError and friends)
        raise VocabularyError(f"{bpemodel} is not a sentencepiece model ({err}); give the model's bpe.model.") from None
    proto.normalizer_spec.add_dummy_prefix = False
    proto.normalizer_spec.remove_extra_whitespaces = False
    return spm.SentencePieceProcessor(model_proto=proto.SerializeToString())


def compose_map(old: Vocabulary, new_tokens: Sequence[str], known: Iterable[int] = ()) -> dict[int, tuple[int, ...]]:
    """New token index -> the old token indices that spell it (`spell`), for every new token except the indices
    in `known` (those keep a row of their own) and those the old vocabulary cannot spell (they keep the fallback)."""
    speller = Speller(old)
    skip = set(known)
    composed = {}
    for j, token in enumerate(new_tokens):
        if j not in skip and (spelled := speller(token)) is not None:
            composed[j] = spelled
    return composed
