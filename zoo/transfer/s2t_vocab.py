"""New languages and vocabulary for S2T (OWSM) models: a language token added to the model's bpe, the
bpe extended with the user's text, the plan of a new language.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from espzoo.errors import S2TError
from espzoo.models.s2t import ASR_TASK, Prompt, language_token, language_tokens, task_tokens, translation_task


@dataclass(frozen=True)
class NewLanguage:
    """A language token added to a model: where it went and how its rows start."""

    token: str
    index: int  # in the new token list (the end: every old id is unchanged)
    init_from: tuple[str, ...]  # the old tokens whose rows' mean starts its rows (one: a copy)
    bpemodel: Path  # the sentencepiece model with the token as a user-defined piece

    def describe(self) -> str:
        start = (
            f"a copy of {self.init_from[0]}'s rows" if len(self.init_from) == 1
            else f"the mean of the {len(self.init_from)} language rows"
        )
        return f"new language token {self.token} (id {self.index}), its rows start as {start}"


@dataclass
class LanguagePlan:
    """What an S2T fine-tune changes in the vocabulary: the prompt (None without --lang), the new language token
    when the model lacked it, and the pieces `--vocab extend` added."""

    prompt: Prompt | None
    new: NewLanguage | None = None
    tokens: list[str] = field(default_factory=list)  # the new model's token list
    extension: Extension | None = None

    def summary(self) -> dict[str, Any]:
        new, ext = self.new, self.extension
        if new:
            text = new.describe()
        elif self.prompt:
            text = f"{self.prompt.lang} is one of the model's languages"
        else:
            text = "no --lang given (needed to fine-tune)"
        return {
            "prompt": [self.prompt.lang, self.prompt.task] if self.prompt else None,
            "new_token": new.token if new else None,
            "index": new.index if new else None,
            "init_from": list(new.init_from) if new else None,
            "describe": text,
            "extension": {
                "pieces": list(ext.pieces), "coverage_before": ext.before, "coverage_after": ext.after,
                "describe": ext.describe(),
            } if ext else None,
        }


def plan_language(
    token_list: Sequence[str], bpemodel: str | Path | None, lang: str, *, lang_init: str | None, workdir: Path,
    target_lang: str | None = None,
) -> LanguagePlan:
    """The prompt for `lang` (transcription, or translation into `target_lang`); when the model lacks the
    language's token, the token appended to the token list and to a copy of `bpemodel` (in `workdir`), its rows
    to start from `lang_init`'s or the mean of the language rows."""
    prompt = Prompt.for_language(lang, translation_task(target_lang) if target_lang else ASR_TASK)
    tokens = list(token_list)
    if prompt.task not in tokens:
        known = ", ".join(t for t in task_tokens(tokens) if t != ASR_TASK) or "none"
        raise S2TError(f"The model has no task token {prompt.task}: it translates into {known}; pick one of "
                       "those with --target-lang, or drop --target-lang to transcribe.")
    if prompt.lang in tokens:
        if lang_init:
            raise S2TError(f"--lang-init applies to a new language only; the model already knows {prompt.lang}.")
        return LanguagePlan(prompt, None, tokens)
    if ASR_TASK not in tokens:
        raise S2TError("The model's token list has no <asr> task token; it is not an OWSM model.")
    languages = language_tokens(tokens)
    if lang_init:
        source = language_token(lang_init)
        if source not in tokens:
            raise S2TError(
                f"--lang-init {lang_init}: the model has no {source} token (it knows {', '.join(languages[:12])})."
            )
        init_from: tuple[str, ...] = (source,)
    elif languages:
        init_from = tuple(languages)
    else:
        raise S2TError("The model's token list holds no language token to start a new one from; give --lang-init.")
    if bpemodel is None:
        raise S2TError("Adding a language token needs the model's bpe.model; pull the whole repo (--all).")
    new_model = add_user_symbols(Path(bpemodel), [prompt.lang], Path(workdir) / "bpe.model")
    tokens.append(prompt.lang)
    return LanguagePlan(prompt, NewLanguage(prompt.lang, len(tokens) - 1, init_from, new_model), tokens)


def add_user_symbols(bpemodel: Path, symbols: Sequence[str], dest: Path) -> Path:
    """A copy of a sentencepiece model with `symbols` appended as USER_DEFINED pieces (every old piece keeps its
    id), written to `dest` complete or not at all."""
    from sentencepiece import sentencepiece_model_pb2 as model_pb2

    from espzoo.utils.fs import atomic_write

    proto = model_pb2.ModelProto()
    try:
        proto.ParseFromString(Path(bpemodel).read_bytes())
    except Exception as err:  # noqa: BLE001 (protobuf's DecodeError and friends)
        raise S2TError(f"{bpemodel} is not a sentencepiece model ({err}); re-download the repo.") from None
    existing = {p.piece for p in proto.pieces}
    scores = [p.score for p in proto.pieces if p.type == model_pb2.ModelProto.SentencePiece.NORMAL]
    for symbol in symbols:
        if symbol in existing:
            continue
        piece = proto.pieces.add()
        piece.piece = symbol
        piece.type = model_pb2.ModelProto.SentencePiece.USER_DEFINED
        piece.score = min(scores, default=0.0)
    dest.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(dest, lambda tmp: tmp.write_bytes(proto.SerializeToString()))
    return dest


def s2t_vocabulary(
    old: Any, vocab: str, lang: str | None, lang_init: str | None, workdir: Path | None,
    texts: Sequence[str] | None = None, target_lang: str | None = None, text_column: str | None = None,
) -> tuple[Any, dict[int, tuple[int, ...]], LanguagePlan | None]:
    """The vocabulary of a fine-tuned S2T model: the pretrained one (`--vocab keep`, S2T's default: OWSM's 50k
    pieces cover most scripts), plus the language token when the model lacks it, plus the pieces `extend:N[:TEXT]`
    learns from TEXT (else `texts`, the training transcripts). Returns (Vocabulary, new language token index ->
    the language indices whose rows' mean starts it, the LanguagePlan, None when neither `lang` nor `extend` is
    given). The extension's pieces start as every new token does (espzoo.transfer: `--new-rows`)."""
    import tempfile

    from espzoo.transfer.vocab import Vocabulary

    extension = parse_extend(vocab)
    if lang_init and not lang:
        raise S2TError("--lang-init needs --lang (the new language whose token starts from it).")
    if target_lang and not lang:
        raise S2TError("--target-lang needs --lang (the language spoken in the data, which is translated).")
    vocabulary = Vocabulary(list(old.tokens), old.token_type, old.bpemodel)
    vocabulary.old_to_new = {i: i for i in range(len(old.tokens))}
    vocabulary.new_in_old = 1.0
    if not lang and extension is None:
        return vocabulary, {}, None
    workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="espzoo-s2t-"))
    row_init: dict[int, tuple[int, ...]] = {}
    language = None
    if lang:
        language = plan_language(old.tokens, old.bpemodel, lang, lang_init=lang_init, workdir=workdir / "lang",
                                 target_lang=target_lang)
        if language.new is not None:
            new = language.new
            index = {t: i for i, t in enumerate(old.tokens)}
            vocabulary.tokens = list(language.tokens)
            vocabulary.bpemodel = new.bpemodel
            vocabulary.source = f"keep + {new.token}"
            row_init[new.index] = tuple(index[t] for t in new.init_from)
    if extension is not None:
        units, text = extension
        texts = read_texts(text, text_column) if text else list(texts or [])
        if not texts:
            raise S2TError(f"--vocab {vocab} needs text: write extend:{units}:TEXTFILE, or give training transcripts.")
        ext = extend_pieces(vocabulary.bpemodel, old.tokens, vocabulary.tokens, texts, units, workdir / "extend")
        vocabulary.tokens = [*vocabulary.tokens, *ext.pieces]
        vocabulary.bpemodel = ext.bpemodel
        vocabulary.source = f"{vocabulary.source} + {len(ext.pieces)} pieces"
        language = language or LanguagePlan(None, None, list(vocabulary.tokens))
        language.extension = ext
    plain = [t for t in vocabulary.tokens if t not in ("<blank>", "<unk>")]
    known = set(old.tokens)  # once: OWSM's 50k tokens made a set per token take 100 s
    vocabulary.new_in_old = sum(t in known for t in plain) / len(plain)
    return vocabulary, row_init, language


_EXTEND = re.compile(r"^extend:(\d+)(?::(.+))?$")


def parse_extend(vocab: str) -> tuple[int, Path | None] | None:
    """`keep` -> None; `extend:N[:TEXT]` -> (N, TEXT or None); anything else is refused for S2T models."""
    if vocab.strip() == "keep":
        return None
    match = _EXTEND.match(vocab.strip())
    if not match or int(match.group(1)) < 1:
        raise S2TError(
            f"--vocab {vocab} does not fit an S2T (OWSM) model, whose pieces stay: use keep (the default) or "
            "extend:N[:TEXT] (add up to N pieces learned from TEXT, or from the training transcripts)."
        )
    return int(match.group(1)), Path(match.group(2)) if match.group(2) else None


def read_texts(path: Path, text_column: str | None = None) -> list[str]:
    from espzoo.errors import VocabularyError
    from espzoo.transfer.vocab import read_texts as read

    try:
        return read(path, text_column)
    except VocabularyError as err:
        raise S2TError(str(err)) from None


@dataclass(frozen=True)
class Extension:
    """Pieces learned from the user's text that the pretrained sentencepiece model lacked, appended after its ids."""

    pieces: tuple[str, ...]
    bpemodel: Path
    before: float  # share of the text's pieces that are <unk> or a single character, with the old pieces
    after: float  # the same with the new pieces

    def describe(self) -> str:
        return (
            f"{len(self.pieces)} new pieces; text in <unk>/single characters: {self.before:.0%} -> {self.after:.0%}"
        )


def extend_pieces(
    bpemodel: Path | None, old_tokens: Sequence[str], tokens: Sequence[str], texts: Sequence[str], units: int,
    workdir: Path,
) -> Extension:
    """Up to `units` pieces a unigram model trained on `texts` uses that `bpemodel` lacks, most used first, added
    to a copy of `bpemodel` as NORMAL pieces after every old id. Their score is the best old piece's, so that the
    segmentation prefers one new piece over the several old ones that spell it."""
    import collections
    import tempfile

    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as model_pb2

    from espzoo.utils.fs import atomic_write

    if bpemodel is None:
        raise S2TError("--vocab extend needs the model's bpe.model; pull the whole repo (--all).")
    proto = model_pb2.ModelProto()
    proto.ParseFromString(Path(bpemodel).read_bytes())
    if proto.trainer_spec.model_type != model_pb2.TrainerSpec.UNIGRAM:
        raise S2TError(f"--vocab extend needs a unigram sentencepiece model; {bpemodel} is another kind. Use keep.")
    old_sp = spm.SentencePieceProcessor(model_proto=proto.SerializeToString())
    existing = {p.piece for p in proto.pieces}
    workdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        (Path(tmp) / "text.txt").write_text("".join(f"{t}\n" for t in texts), encoding="utf-8")
        size = min(len(existing), max(units * 4, 64))
        try:
            spm.SentencePieceTrainer.train(
                input=str(Path(tmp) / "text.txt"), model_prefix=str(Path(tmp) / "m"), vocab_size=size,
                model_type="unigram", character_coverage=1.0, hard_vocab_limit=False, minloglevel=2,
            )
        except RuntimeError as err:
            raise S2TError(f"--vocab extend:{units}: sentencepiece could not learn from the text ({err}).") from None
        learned = spm.SentencePieceProcessor(model_file=str(Path(tmp) / "m.model"))
    counts: collections.Counter[str] = collections.Counter()
    for text in texts:
        counts.update(learned.encode(text, out_type=str))
    candidates = [p for p, _ in counts.most_common() if p not in existing and len(p.lstrip("\u2581")) > 1]
    pieces = tuple(candidates[:units])
    best = max((p.score for p in proto.pieces if p.type == model_pb2.ModelProto.SentencePiece.NORMAL), default=0.0)
    for piece in pieces:
        added = proto.pieces.add()
        added.piece, added.score, added.type = piece, best, model_pb2.ModelProto.SentencePiece.NORMAL
    dest = workdir / "bpe.model"
    atomic_write(dest, lambda tmp: tmp.write_bytes(proto.SerializeToString()))
    new_sp = spm.SentencePieceProcessor(model_file=str(dest))
    return Extension(pieces, dest, _poor_share(old_sp, texts), _poor_share(new_sp, texts))


def _poor_share(processor: Any, texts: Sequence[str]) -> float:
    """Share of the text's pieces that are <unk> or a single character (what a vocabulary covers badly)."""
    pieces = [p for t in texts for p in processor.encode(t, out_type=str)]
    poor = [p for p in pieces if p == processor.id_to_piece(processor.unk_id()) or len(p.lstrip("\u2581")) <= 1]
    return len(poor) / len(pieces) if pieces else 0.0


