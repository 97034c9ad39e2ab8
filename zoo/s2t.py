"""The rules of ESPnet's S2T models (OWSM, OWSM-CTC): one home for what differs from ASR.

    task = config_task(config)                      # "asr", "s2t" (attention enc-dec) or "s2t_ctc" (OWSM-CTC)
    espnet_task(task)                               # espnet2.tasks.s2t.S2TTask / espnet2.tasks.s2t_ctc.S2TTask
    prompt = Prompt.for_language("spa")             # <spa><asr>
    write_training_data(dataset, config, prompt, dest)   # text, text.prev, text.ctc as the S2T preprocessor reads
    add_language(config, "top", lang_init="spa", workdir=...)  # a token the model never saw: bpe + token list
    clean_hypothesis(tokens)                        # no <lang>, <asr>, timestamps

Facts checked in espnet 202511 (espnet2/train/preprocessor.py S2TPreprocessor / S2TCTCPreprocessor,
espnet2/s2t/espnet_model.py, espnet2/bin/s2t_inference*.py):

- `text` of the attention model is `<lang><task><0.00> words<END>` with no space between the special tokens: the
  preprocessor drops the first token (the `▁` sentencepiece puts first), then, with probability
  1 - `time_apply_prob`, removes every timestamp and inserts `<notimestamps>` at position 2. Writing
  `<notimestamps>` ourselves would give `<notimestamps><notimestamps>` in those samples, so timestamps are written
  (the whole utterance as one segment, its end clipped to `speech_length`).
- OWSM-CTC's `text` is `<lang><task> words`; its prefix is the first two tokens.
- `text_prev` and `text_ctc` are declared optional but the models' forward takes them positionally: always given.
  `text_prev` `<na>` means no prompt; `text_ctc` is the plain transcript.
- Speech is padded/trimmed to `preprocessor_conf.speech_length` seconds; S2T `Speech2Text` pads itself, the CTC
  greedy search does not (`pad_speech` here).
- A new language token goes to the end of the token list (never inside the timestamp block, whose ids the
  preprocessor and the decoder's score filter treat as one range) and into `bpe.model` as a USER_DEFINED piece,
  so that `<top>` stays one token; OWSM's language identification only scores the ids between the first and
  last language token, so it ignores an appended one: give the language when decoding.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from espzoo import repo
from espzoo.bundle import BundleError

Task = Literal["asr", "s2t", "s2t_ctc"]
NA = "<na>"
ASR_TASK = "<asr>"
# Tokens of OWSM's special block that look like language tokens (three letters in angle brackets) but are not.
_NOT_LANGUAGES = frozenset({"<asr>", "<unk>", "<sos>", "<eos>", "<sop>", "<na>"})
_LANGUAGE = re.compile(r"^<[a-z]{3}>$")
_TASK = re.compile(r"^<(asr|st_[a-z]{3}|lid|vad)>$")
_TIME = re.compile(r"^<\d+\.\d\d>$")
_SPECIAL = re.compile(r"^<[^<>\s]+>$")
DEFAULT_SPEECH_LENGTH = 30.0  # seconds, S2TPreprocessor's default


class S2TError(BundleError):
    """An S2T model, language or prompt that cannot be used as asked (the message says what to fix)."""


# ------------------------------------------------------------------------------------------------ the task


def config_task(config: dict[str, Any]) -> Task:
    """Which ESPnet task trained the model of `config`: `s2t_ctc` (OWSM-CTC), `s2t` (OWSM) or `asr` (the rule
    lives in espzoo.repo)."""
    return repo.espnet_task_of_config(config)  # type: ignore[return-value]


def espnet_task(task: Task) -> Any:
    """ESPnet's task class for `task` (imported with espzoo's offline NLTK setup, ~7 s the first time)."""
    from espzoo._espnet import import_asr_task

    asr_task = import_asr_task()  # also installs the offline setup the S2T import chains need
    if task == "asr":
        return asr_task
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):  # flash_attn notes go to stdout
        if task == "s2t":
            from espnet2.tasks.s2t import S2TTask
        else:
            from espnet2.tasks.s2t_ctc import S2TTask
    return S2TTask


# ------------------------------------------------------------------------------------------------ tokens


def language_tokens(token_list: Sequence[str]) -> list[str]:
    """The language tokens of an OWSM token list (`<eng>`, `<spa>`, ...), in token-list order."""
    return [t for t in token_list if _LANGUAGE.match(t) and t not in _NOT_LANGUAGES]


def task_tokens(token_list: Sequence[str]) -> list[str]:
    return [t for t in token_list if _TASK.match(t)]


def is_special(token: str) -> bool:
    """Language, task, timestamp and the other `<...>` symbols (what a transcript never contains)."""
    return bool(_SPECIAL.match(token))


def language_token(query: str) -> str:
    """The OWSM token for a language given as ISO 639-3, 639-1 or a name (`es` -> `<spa>`)."""
    from espzoo.languages import LanguageError, owsm_token, resolve

    try:
        return owsm_token(resolve(query))
    except LanguageError as err:
        raise S2TError(str(err)) from None


@dataclass(frozen=True)
class Prompt:
    """What an S2T model is told about an utterance: its language and the task (`<spa>`, `<asr>`)."""

    lang: str
    task: str = ASR_TASK

    @classmethod
    def for_language(cls, query: str, task: str = ASR_TASK) -> Prompt:
        return cls(language_token(query), task)

    @property
    def translates(self) -> bool:
        return self.task.startswith("<st_")

    def check(self, token_list: Sequence[str]) -> None:
        for token, what, fix in (
            (self.lang, "language", "give --lang with one of its languages (or a new one when fine-tuning)"),
            (self.task, "task", "translate into one of its target languages (--target-lang) or transcribe"),
        ):
            if token not in token_list:
                known = ", ".join((language_tokens if what == "language" else task_tokens)(token_list)[:12])
                raise S2TError(f"The model has no {what} token {token} (it knows {known}); {fix}.")


def translation_task(target: str) -> str:
    """OWSM's task token for speech translation into `target` (a code or a name): `eng` -> `<st_eng>`."""
    return f"<st_{language_token(target).strip('<>')}>"


def default_prompt(token_list: Sequence[str], provenance: dict[str, Any] | None = None) -> Prompt:
    """The prompt when the user gives none: the fine-tuning run's language, else English, else the first one."""
    given = (provenance or {}).get("s2t") or {}
    if given.get("lang"):
        return Prompt(given["lang"], given.get("task") or ASR_TASK)
    languages = language_tokens(token_list)
    if not languages:
        raise S2TError("The model's token list holds no language token (<eng>, <spa>, ...); it is not an OWSM model.")
    return Prompt("<eng>" if "<eng>" in languages else languages[0])


def describe(token_list: Sequence[str]) -> dict[str, Any]:
    """What `info` shows of an S2T model: its languages and tasks (from the token list)."""
    languages = language_tokens(token_list)
    return {
        "languages": [t.strip("<>") for t in languages],
        "tasks": [t.strip("<>") for t in task_tokens(token_list)],
    }


# ------------------------------------------------------------------------------------------------ data


def preprocessor_settings(config: dict[str, Any]) -> dict[str, Any]:
    """The pretrained config's S2T preprocessor settings, with ESPnet's defaults where it names none."""
    conf = dict(config.get("preprocessor_conf") or {})
    conf.setdefault("speech_length", DEFAULT_SPEECH_LENGTH)
    conf.setdefault("speech_resolution", 0.02)
    conf.setdefault("na_symbol", NA)
    conf.setdefault("first_time_symbol", "<0.00>")
    conf.setdefault("last_time_symbol", "<30.00>")
    return conf


def training_text(words: str, seconds: float, prompt: Prompt, config: dict[str, Any], task: Task) -> str:
    """One utterance's `text` as the S2T preprocessor of `task` expects it (see the module docstring)."""
    if task == "s2t_ctc":
        return f"{prompt.lang}{prompt.task} {words}"
    conf = preprocessor_settings(config)
    first, last = conf["first_time_symbol"], conf["last_time_symbol"]
    resolution = float(conf["speech_resolution"])
    start = float(first.strip("<>"))
    limit = min(float(last.strip("<>")), float(conf["speech_length"]))
    end = min(seconds, limit)
    steps = int(round((end - start) / resolution, 6))  # down to the grid: the end never passes the speech
    return f"{prompt.lang}{prompt.task}{first} {words}<{start + steps * resolution:.2f}>"


def ctc_text(words: str, prompt: Prompt, task: Task, na: str = NA) -> str:
    """One utterance's `text_ctc`: the transcript. For speech translation (`words` is the translation) the
    attention model's CTC branch would need the source transcript, which the data lacks: `<na>`, which ESPnet
    drops from the CTC loss; OWSM-CTC's CTC output is the translation itself."""
    return na if prompt.translates and task == "s2t" else words


def write_training_data(dataset: Any, config: dict[str, Any], prompt: Prompt, dest: Path) -> Any:
    """A copy of a prepared `data.Dataset` at `dest` whose `text` carries the prompt, with `text.prev` (`<na>`)
    and `text.ctc` (the plain transcript) beside it; wav.scp and speech_shape are the same. Returns the
    Dataset for `dest` (the trainer passes text.prev / text.ctc to ESPnet when it finds them)."""
    import dataclasses

    from espzoo._fs import copy_file, write_text

    task = config_task(config)
    rate = int(dataset.sample_rate)
    samples = {}
    for line in Path(dataset.speech_shape).read_text(encoding="utf-8").splitlines():
        if line.strip():
            utt, shape = line.split(maxsplit=1)
            samples[utt] = int(shape.split(",")[0])
    transcripts = dataset.transcripts()
    na = preprocessor_settings(config)["na_symbol"]
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("wav.scp", "speech_shape", "utt2spk"):
        if (Path(dataset.dir) / name).is_file():
            copy_file(Path(dataset.dir) / name, dest / name)
    lines = {
        "text": [f"{u} {training_text(w, samples[u] / rate, prompt, config, task)}" for u, w in transcripts.items()],
        "text.prev": [f"{u} {na}" for u in transcripts],
        "text.ctc": [f"{u} {ctc_text(w, prompt, task, na)}" for u, w in transcripts.items()],
    }
    for name, rows in lines.items():
        write_text(dest / name, "".join(f"{r}\n" for r in rows))
    return dataclasses.replace(dataset, dir=dest)


def extra_data_files(data_dir: Path) -> list[str]:
    """ESPnet `--*_data_path_and_name_and_type` entries for the S2T side files of a data dir, if it has them."""
    entries = []
    for file, name in (("text.prev", "text_prev"), ("text.ctc", "text_ctc")):
        if (Path(data_dir) / file).is_file():
            entries.append(f"{Path(data_dir) / file},{name},text")
    return entries


# ------------------------------------------------------------------------------------------------ a new language


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

    from espzoo._fs import atomic_write

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

    from espzoo.vocab import Vocabulary

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


# ------------------------------------------------------------------------------------------------ --vocab extend

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
    from espzoo.vocab import VocabularyError
    from espzoo.vocab import read_texts as read

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

    from espzoo._fs import atomic_write

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


# ------------------------------------------------------------------------------------------------ decoding


def pad_speech(wave: Any, config: dict[str, Any], sample_rate: int) -> Any:
    """Pad or trim a waveform to the preprocessor's `speech_length`, as in training (the CTC search does not)."""
    import numpy as np

    length = int(float(preprocessor_settings(config)["speech_length"]) * sample_rate)
    if len(wave) >= length:
        return wave[:length]
    return np.pad(wave, (0, length - len(wave)))


def clean_hypothesis(tokens: Sequence[str], tokenizer: Any | None) -> str:
    """The transcript of a decoded token sequence without its prompt, task and timestamp tokens."""
    plain = [t for t in tokens if not is_special(t)]
    if tokenizer is not None:
        return tokenizer.tokens2text(plain).strip()
    return " ".join(plain).replace("\u2581", " ").strip()


@dataclass
class S2TDecoder:
    """ESPnet's S2T `Speech2Text` (beam search) or its greedy OWSM-CTC decoder (espzoo._espnet_compat) with a fixed
    prompt; called like ASR's Speech2Text, it returns `[(text, tokens, token_ids, None)]` with the text cleaned."""

    speech2text: Any
    task: Task
    prompt: Prompt
    config: dict[str, Any]
    sample_rate: int

    @property
    def model(self) -> Any:
        return self.speech2text.s2t_model

    def __call__(self, wave: Any) -> list[tuple[str, list[str], list[int], None]]:
        if self.task == "s2t_ctc":
            wave = pad_speech(wave, self.config, self.sample_rate)
        results = self.speech2text(wave, lang_sym=self.prompt.lang, task_sym=self.prompt.task)
        _, tokens, token_ids = results[0][:3]
        return [(clean_hypothesis(tokens, self.speech2text.tokenizer), tokens, token_ids, None)]


def build_decoder(
    config_path: Path,
    config: dict[str, Any],
    prompt: Prompt,
    *,
    sample_rate: int,
    device: str = "cpu",
    beam_size: int = 4,
    ctc_weight: float = 0.3,
    maxlenratio: float = 0.0,
    minlenratio: float = 0.0,
    penalty: float = 0.0,
) -> S2TDecoder:
    """ESPnet's S2T inference object for the config at `config_path`, without weights (load them with
    `weights_only=True` into `decoder.model`: ESPnet's own loader unpickles anything)."""
    import contextlib
    import io

    task = config_task(config)
    prompt.check(list(config.get("token_list") or []))
    espnet_task(task)
    with contextlib.redirect_stdout(io.StringIO()):
        if task == "s2t_ctc":
            from espzoo._espnet_compat import s2t_ctc_greedy

            speech2text = s2t_ctc_greedy(config_path, None, device=device, lang_sym=prompt.lang, task_sym=prompt.task)
        else:
            from espnet2.bin.s2t_inference import Speech2Text

            speech2text = Speech2Text(
                s2t_train_config=str(config_path), s2t_model_file=None, device=device, beam_size=beam_size,
                ctc_weight=ctc_weight, maxlenratio=maxlenratio, minlenratio=minlenratio, penalty=penalty, nbest=1,
                lang_sym=prompt.lang, task_sym=prompt.task, predict_time=False,
            )
    return S2TDecoder(speech2text, task, prompt, config, sample_rate)


def decode_ctc_weight(config: dict[str, Any]) -> float:
    """The attention model's default CTC weight for decoding: the training weight (a small model loops without
    CTC scoring), 0.3 when the config names none; OWSM-CTC decodes greedily (1.0)."""
    if config_task(config) == "s2t_ctc":
        return 1.0
    return float((config.get("model_conf") or {}).get("ctc_weight", 0.3))


def export_names(task: Task) -> tuple[str, str]:
    """meta.yaml keys (model file, train config) ESPnet's pack writes for `task`."""
    prefix = "asr" if task == "asr" else "s2t"
    return f"{prefix}_model_file", f"{prefix}_train_config"


def train_task_args(task: Task) -> list[str]:
    """The arguments that tell `espzoo._asr_train` which ESPnet task to run (none for ASR)."""
    return [] if task == "asr" else ["--espzoo-task", task]


__all__ = [
    "ASR_TASK",
    "LanguagePlan",
    "NewLanguage",
    "Prompt",
    "S2TDecoder",
    "S2TError",
    "Task",
    "Extension",
    "add_user_symbols",
    "extend_pieces",
    "build_decoder",
    "clean_hypothesis",
    "config_task",
    "ctc_text",
    "default_prompt",
    "describe",
    "espnet_task",
    "extra_data_files",
    "language_token",
    "language_tokens",
    "pad_speech",
    "plan_language",
    "s2t_vocabulary",
    "task_tokens",
    "training_text",
    "translation_task",
    "write_training_data",
]
