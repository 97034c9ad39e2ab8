"""The rules of ESPnet's S2T models (OWSM, OWSM-CTC): one home for what differs from ASR.

    task = task_of(config)                          # espzoo.tasks: S2T (attention enc-dec) or S2T_CTC (OWSM-CTC)
    task_class(task)                                # espnet2.tasks.s2t.S2TTask / espnet2.tasks.s2t_ctc.S2TTask
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from espzoo.errors import S2TError
from espzoo.models.espnet_env import task_class
from espzoo.tasks import S2T, Task, task_of

NA = "<na>"


ASR_TASK = "<asr>"


# Tokens of OWSM's special block that look like language tokens (three letters in angle brackets) but are not.
_NOT_LANGUAGES = frozenset({"<asr>", "<unk>", "<sos>", "<eos>", "<sop>", "<na>"})


_LANGUAGE = re.compile(r"^<[a-z]{3}>$")


_TASK = re.compile(r"^<(asr|st_[a-z]{3}|lid|vad)>$")


_TIME = re.compile(r"^<\d+\.\d\d>$")


_SPECIAL = re.compile(r"^<[^<>\s]+>$")


PROVENANCE_SECTION = S2T.family  # provenance.json's section for the prompt a model was fine-tuned with
DEFAULT_SPEECH_LENGTH = 30.0  # seconds, S2TPreprocessor's default


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
    from espzoo.catalog.languages import owsm_token, resolve
    from espzoo.errors import LanguageError

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
    given = (provenance or {}).get(PROVENANCE_SECTION) or {}
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
    if task.ctc_only:
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
    return na if prompt.translates and not task.ctc_only else words


def write_training_data(dataset: Any, config: dict[str, Any], prompt: Prompt, dest: Path) -> Any:
    """A copy of a prepared `data.Dataset` at `dest` whose `text` carries the prompt, with `text.prev` (`<na>`)
    and `text.ctc` (the plain transcript) beside it; wav.scp and speech_shape are the same. Returns the
    Dataset for `dest` (the trainer passes text.prev / text.ctc to ESPnet when it finds them)."""
    import dataclasses

    from espzoo.utils.fs import copy_file, write_text

    task = task_of(config)
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
    """ESPnet's S2T `Speech2Text` (beam search) or its greedy OWSM-CTC decoder (espzoo.models.compat) with a fixed
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
        if self.task.ctc_only:
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

    task = task_of(config)
    prompt.check(list(config.get("token_list") or []))
    task_class(task)
    with contextlib.redirect_stdout(io.StringIO()):
        if task.ctc_only:
            from espzoo.models.compat import s2t_ctc_greedy

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
    if task_of(config).ctc_only:
        return 1.0
    return float((config.get("model_conf") or {}).get("ctc_weight", 0.3))
