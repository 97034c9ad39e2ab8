"""What an ESPnet model repo *is*: the rules, as pure functions over a listing of repo paths and parsed YAML.

Every caller asks these, so that a rule has one home: `hub` chooses what to download from the Hub's listing,
`bundle` opens a pulled folder, `transfer` and `evaluate` resolve experiment dirs, `trainer` picks the averaged
checkpoint, `finetune` prepares data at the rate the trainer will check, `catalog_refresh` reads rates.

    best_checkpoint(["exp/a/valid.loss.ave.pth", "exp/a/valid.acc.best.pth"])   # -> "exp/a/valid.acc.best.pth"
    choose_config(candidates)                 # the training config among YAMLs that look like one
    meta_files(load_yaml(meta_text))     # task, config and checkpoint that meta.yaml names (asr_* or s2t_*)
    locate("/home/u/recipe/exp/x/bpe.model", listing)   # the repo's own path for a path a config holds
    parse_token_list(text, where)             # ESPnet's reader (one token a line, trailing blanks dropped)
    config_sample_rate(config)                # frontend_conf.fs, else preprocessor_conf.fs, else 16000
    stats_reference(config)                   # (needs stats, the path the config gives)

Paths are POSIX strings relative to the repo root (a remote listing and a local folder look alike). Nothing here
reads files or imports more than the standard library: `espzoo search` loads it.
"""

from __future__ import annotations

import fnmatch
import re
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

import yaml

from espzoo.errors import BundleError
from espzoo.tasks import FAMILIES
from espzoo.utils.yaml_io import load_yaml

# Files ESPnet's ASR/S2T recipes ship; these names are conventions, found by content when meta.yaml is absent.
STATS_NAME = "feats_stats.npz"
BPE_NAME = "bpe.model"
TOKENS_NAME = "tokens.txt"
CONFIG_NAME = "config.yaml"
MODEL_NAME = "model.pth"  # espzoo finetune's OUT/model.pth: the n-best average, the experiment's model
LM_DIR = "lm"  # OUT/lm: a language model beside the ASR model (its config.yaml and model.pth; espzoo.models.lm)
LM_DECODE_NAME = "decode.yaml"  # beside an LM: {lm_weight: W}, the weight to decode with by default
CHECKPOINT_SUFFIXES = (".pth", ".pt")
# espzoo's LoRA adapter-only export (espzoo.lora): these two files, applied to the base model the config names.
ADAPTER_CONFIG_NAME = "adapter_config.yaml"
ADAPTER_NAME = "adapter.pth"
# OUT/init/saved_names.json (espzoo.transfer.apply_plan): {the model's tensor name: the pretrained checkpoint's name}
# for tensors the installed ESPnet renamed on load; the trained model is saved under the pretrained names again.
SAVED_NAMES_NAME = "saved_names.json"
DEFAULT_SAMPLE_RATE = 16000  # ESPnet's frontends default to 16 kHz when a config does not say

# "The model" among a folder's checkpoints. ESPnet's asr.sh decodes valid.acc.ave (the n-best average by
# accuracy); a model trained without an attention decoder has no accuracy and averages by loss. Accuracy beats
# loss, and within a criterion the average beats the single best; other criteria (valid.cer.ave) come next.
_CHECKPOINT_ORDER = (
    MODEL_NAME, "valid.acc.ave*", "valid.acc.best*", "valid.loss.ave*", "valid.loss.best*", "*.ave*", "*best*",
)
_TRAINING_STATE = re.compile(r"(checkpoint|latest|\d+epoch)\.pth")  # resumable state / single epochs: last resort
_FOREIGN_TASKS = ("tts", "enh", "st_", "lm", "diar", "spk")  # exp/<task>_train_*: folders of other ESPnet tasks

P = TypeVar("P", str, PurePosixPath)


# ----------------------------------------------------------------------------------------------- checkpoints


def is_checkpoint(path: str | PurePosixPath) -> bool:
    return str(path).endswith(CHECKPOINT_SUFFIXES)


def is_language_model(path: str | PurePosixPath) -> bool:
    """A language model's files (exp/lm_train_*/..., lm/...): never the ASR model, never needed to fine-tune it."""
    return any(part == "lm" or part.startswith("lm_") for part in PurePosixPath(path).parts[:-1])


def checkpoint_rank(path: str | PurePosixPath, config_dir: str | None = None,
                    criteria: Sequence[str] = ()) -> tuple[Any, ...]:
    """Sort key: lower is more "the model". Beside the config first, never a language model's, espzoo's model.pth,
    then the averages and bests of `criteria` (config_criteria: the run's own --best_model_criterion, so an OWSM
    repo's valid.total_count.ave wins), then _CHECKPOINT_ORDER, then the latest epoch, training state last."""
    p = PurePosixPath(path)
    name = p.name
    preferred = next((i for i, c in enumerate(criteria) if name.startswith(f"{c}.ave")), len(criteria))
    criteria_best = next((i for i, c in enumerate(criteria) if name.startswith(f"{c}.best")), len(criteria))
    kind = next((i for i, pattern in enumerate(_CHECKPOINT_ORDER) if fnmatch.fnmatch(name, pattern)),
                len(_CHECKPOINT_ORDER))
    state = bool(_TRAINING_STATE.fullmatch(name))
    epoch = int(name[: -len("epoch.pth")]) if re.fullmatch(r"\d+epoch\.pth", name) else 0
    beside = config_dir is None or str(p.parent) == str(PurePosixPath(config_dir))
    return (not beside, is_language_model(p), name != MODEL_NAME, preferred, criteria_best, kind, state,
            name != "latest.pth", -epoch, name, str(p))


def config_criteria(config: Any) -> list[str]:
    """The run's --best_model_criterion as checkpoint name prefixes: [["valid", "acc", "max"]] -> ["valid.acc"].
    ESPnet writes every argument into the config.yaml it saves, so a published config says how it averaged."""
    criteria = config.get("best_model_criterion") if isinstance(config, Mapping) else None
    found = []
    for item in criteria if isinstance(criteria, list) else []:
        if isinstance(item, list | tuple) and len(item) >= 2:
            found.append(f"{item[0]}.{item[1]}")
    return found


def best_checkpoint(paths: Iterable[P], config_dir: str | None = None, criteria: Sequence[str] = ()) -> P | None:
    """The checkpoint that is "the model" among `paths` (non-checkpoint paths ignored), None when there is none."""
    found = [p for p in paths if is_checkpoint(p)]
    return min(found, key=lambda p: checkpoint_rank(p, config_dir, criteria)) if found else None


# ---------------------------------------------------------------------------------------------------- configs


def looks_like_train_config(config: Any) -> bool:
    """ASR/S2T training configs have both; LM, TTS and decode configs lack an encoder or a token list.
    (The asr_transducer task's configs name no encoder: theirs is built from `encoder_conf.body_conf` blocks.)"""
    if not isinstance(config, Mapping):
        return False
    body = isinstance(config.get("encoder_conf"), Mapping) and "body_conf" in config["encoder_conf"]
    return ("encoder" in config or body) and "token_list" in config


def config_rank(path: str | PurePosixPath, *, checkpoint_beside: bool, collect_stats: bool = False) -> tuple[Any, ...]:
    """Sort key among training-config candidates: lower wins. A collect_stats run saves the same config beside
    the stats (it loses); a config with a checkpoint beside it, in an asr/s2t folder, shallow, wins."""
    p = PurePosixPath(path)
    leaf = p.parent.name
    foreign = is_language_model(p) or leaf.startswith(_FOREIGN_TASKS)
    return (collect_stats, foreign, not checkpoint_beside, not leaf.startswith(FAMILIES), len(p.parts), str(p))


def choose_config(candidates: Iterable[tuple[P, bool, bool]]) -> P | None:
    """The training config among (path, checkpoint beside it, is a collect_stats config) candidates."""
    ranked = sorted(candidates, key=lambda c: config_rank(c[0], checkpoint_beside=c[1], collect_stats=c[2]))
    return ranked[0][0] if ranked else None


def checkpoint_dirs(files: Iterable[str | PurePosixPath]) -> set[str]:
    """The folders (as POSIX strings, "." for the root) that hold a checkpoint."""
    return {str(PurePosixPath(f).parent) for f in files if is_checkpoint(f)}


# ---------------------------------------------------------------------------------------------------- meta.yaml


@dataclass(frozen=True)
class MetaFiles:
    """What an ESPnet meta.yaml names: the task (None when it names neither asr_* nor s2t_* files)."""

    task: str | None
    config: str | None  # yaml_files.<task>_train_config as written
    checkpoint: str | None  # files.<task>_model_file as written
    kinds: tuple[str, ...]  # every kind of file it names (for "it names tts files" messages)


def meta_files(meta: Any, where: str = "meta.yaml") -> MetaFiles:
    """Read a parsed meta.yaml (`files.asr_model_file` + `yaml_files.asr_train_config`, or the s2t_* keys)."""
    if not isinstance(meta, Mapping) or not isinstance(meta.get("files"), Mapping):
        raise BundleError(f"{where} is not an ESPnet meta.yaml (no `files:` mapping); the repo may be damaged.")
    files, yaml_files = meta.get("files") or {}, meta.get("yaml_files") or {}
    if not isinstance(yaml_files, Mapping):
        yaml_files = {}
    kinds = tuple(sorted({str(k).removesuffix("_model_file").removesuffix("_file") for k in files}))
    for task in FAMILIES:
        if f"{task}_model_file" in files or f"{task}_train_config" in yaml_files:
            config, checkpoint = yaml_files.get(f"{task}_train_config"), files.get(f"{task}_model_file")
            return MetaFiles(task, str(config) if config else None, str(checkpoint) if checkpoint else None, kinds)
    return MetaFiles(None, None, None, kinds)


# ---------------------------------------------------------------------------------------------------- paths


def locate(value: Any, files: Collection[str], fallback: str | None = None) -> str | None:
    """The repo path (one of `files`) a path from meta.yaml or a config means: as written (ESPnet writes them
    relative to the recipe folder, which is the repo root once packed), then by its trailing parts (absolute paths
    from the training machine), then the shallowest file named `fallback` (or by the value's own file name)."""
    text = value.strip().replace("\\", "/") if isinstance(value, str) else ""
    if text.lower() == "none":
        text = ""
    if text:
        parts = [p for p in PurePosixPath(text).parts if p not in ("/", "..", ".")]
        for start in range(len(parts)):
            candidate = "/".join(parts[start:])
            if candidate in files:
                return candidate
    name = fallback or (PurePosixPath(text).name if text else None)
    if name:
        matches = [f for f in files if PurePosixPath(f).name == name]
        if matches:
            return min(matches, key=lambda f: (len(PurePosixPath(f).parts), f))
    return None


# ---------------------------------------------------------------------------------------------------- tokens


def parse_token_list(text: str, where: str) -> list[str]:
    """A token list file as ESPnet reads it (`line.rstrip()` per line); a repeated token is refused, as ESPnet's
    TokenIDConverter refuses it, but here with the file's name."""
    return check_tokens([line.rstrip() for line in text.splitlines()], where)


def check_tokens(tokens: Sequence[Any], where: str) -> list[str]:
    """The tokens as strings; BundleError naming `where` when one is repeated (ids would be ambiguous)."""
    tokens = [str(t) for t in tokens]
    repeated = [t for t, n in Counter(tokens).items() if n > 1]
    if repeated:
        raise BundleError(f"The token list in {where} repeats {', '.join(map(repr, repeated[:5]))}; each token must "
                          "appear once (ESPnet refuses it too): fix the file or re-export the model.")
    return tokens


# ---------------------------------------------------------------------------------------------------- rates


def parse_sample_rate(value: Any) -> int | None:
    """A sample rate as configs and model names write it (16000, "16000", "16k", "22.05k", "44khz") in Hz.

    ESPnet reads "44k" with humanfriendly.parse_size (44000), but no corpus is recorded at 44000, 22000 or 11000 Hz:
    "44k", "22k" and "11k" are the CD family's shorthand, so they read as 44100, 22050 and 11025 (the 0.2% apart
    frontend sees the same audio; resampling a user's 44.1 kHz files to 44000 would only lose quality). A bare
    number below 1000 is kHz ("16" in a table). None when the value is not a rate."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number, kilo = float(value), False
    elif isinstance(value, str):
        match = re.match(r"\s*(\d+(?:\.\d+)?)\s*(k(?:hz)?|hz)?(?![a-z])", value, re.IGNORECASE)
        if not match:
            return None
        number, kilo = float(match.group(1)), (match.group(2) or "").lower().startswith("k")
    else:
        return None
    if number <= 0:
        return None
    if kilo or number < 1000:
        return {44: 44100, 22: 22050, 11: 11025}.get(int(number), int(number * 1000)) if number == int(number) \
            else int(number * 1000)
    return int(number)


def config_sample_rate(config: Mapping[str, Any], default: int | None = DEFAULT_SAMPLE_RATE) -> int | None:
    """The rate a model's audio must have: frontend_conf.fs, else preprocessor_conf.fs (a recipe that set only the
    preprocessor's trained on audio at that rate), else `default` (ESPnet's frontends assume 16 kHz)."""
    for key in ("frontend_conf", "preprocessor_conf"):
        conf = config.get(key)
        rate = parse_sample_rate(conf.get("fs")) if isinstance(conf, Mapping) else None
        if rate:
            return rate
    return default


# ---------------------------------------------------------------------------------------------------- stats


def stats_reference(config: Mapping[str, Any]) -> tuple[bool, str | None]:
    """(whether the model needs normalization stats, the stats_file path its config gives)."""
    conf = config.get("normalize_conf")
    conf = conf if isinstance(conf, Mapping) else {}
    value = conf.get("stats_file")
    needed = config.get("normalize") == "global_mvn" or "stats_file" in conf
    return needed, str(value) if isinstance(value, str) and value else None


# ---------------------------------------------------------------------------------------------------- references

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?$")


def looks_like_repo_id(text: str) -> bool:
    """ORG/NAME[@REV], and not something that reads as a local path or a checkpoint file."""
    return bool(_REPO_ID.match(text)) and not text.startswith((".", "/", "~")) and \
        not text.endswith((*CHECKPOINT_SUFFIXES, ".ckpt", ".bin"))


@dataclass(frozen=True)
class ModelRef:
    """What a MODEL argument names. kind: "checkpoint" (a file), "experiment" (a folder with config.yaml: espzoo's
    OUT or an ESPnet exp dir), "folder" (a hub-layout repo folder), "repo" (ORG/NAME[@REV] to pull) or "invalid"
    (`problem` says why, in one sentence with the fix)."""

    kind: str
    path: Path | None = None
    repo_id: str | None = None
    revision: str | None = None
    problem: str | None = None


def model_reference(text: str | Path) -> ModelRef:
    """Classify a MODEL argument the one way `plan`, `finetune`, `evaluate` and `transcribe` all read it."""
    text = str(text)
    path = Path(text).expanduser()
    if path.is_file():
        return ModelRef("checkpoint", path)
    if path.is_dir():
        return ModelRef("experiment" if (path / CONFIG_NAME).is_file() else "folder", path)
    if not looks_like_repo_id(text):
        return ModelRef("invalid", problem=(
            f"{text} is neither a folder nor a repo id; pass an experiment dir (espzoo finetune --out), "
            "a pulled model folder, or a repo id such as espnet/bn_openslr53."))
    if path.parent != Path(".") and path.parent.is_dir():  # "exp/bn_fx" beside a local exp/: a mistyped dir
        return ModelRef("invalid", problem=(
            f"{text} does not exist (its folder {path.parent} is local, so it is not a repo id); "
            "check the experiment dir's name."))
    repo_id, _, revision = text.partition("@")
    return ModelRef("repo", repo_id=repo_id, revision=revision or None)


# ---------------------------------------------------------------------------------------------------- card


def read_front_matter(path: Path) -> dict[str, Any]:
    """The YAML front matter of a model card (`---` ... `---` at the top), {} when absent or malformed."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {}
    return parse_front_matter(text)


def parse_front_matter(text: str) -> dict[str, Any]:
    """The YAML front matter of a card's text (a model's or a dataset's), {} when absent or malformed."""
    if not text.startswith("---"):
        return {}
    end = text.find("\n---", 3)
    if end < 0:
        return {}
    import yaml

    try:
        data = load_yaml(text[3:end])
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def is_adapter_only(root: Path) -> bool:
    """Whether the folder is an adapter-only export (no torch needed to tell: transfer and evaluate ask first)."""
    return (Path(root) / ADAPTER_CONFIG_NAME).is_file() and (Path(root) / ADAPTER_NAME).is_file()


def meta_lm_paths(meta: Any) -> tuple[str | None, str | None]:
    """(lm_train_config, lm_file) as a parsed meta.yaml writes them (None where it names none)."""
    if not isinstance(meta, Mapping):
        return None, None
    files = meta.get("files") if isinstance(meta.get("files"), Mapping) else {}
    yaml_files = meta.get("yaml_files") if isinstance(meta.get("yaml_files"), Mapping) else {}
    config, checkpoint = yaml_files.get("lm_train_config"), files.get("lm_file")
    return (str(config) if config else None, str(checkpoint) if checkpoint else None)


def repo_lm_files(listing: Sequence[str], read: Any) -> list[str]:
    """The repo files of the LM its meta.yaml names (config, checkpoint, decode.yaml beside them, a token list the
    config names by path): what `pull` fetches unless --no-lm. `read(path)` returns a small file's text."""
    pass

    present = set(listing)
    if "meta.yaml" not in present:
        return []
    try:
        meta = yaml.safe_load(read("meta.yaml") or "")
    except yaml.YAMLError:
        return []
    config, checkpoint = meta_lm_paths(meta)
    found = {locate(config, present) if config else None, locate(checkpoint, present) if checkpoint else None}
    found.discard(None)
    wanted = {str(f) for f in found}
    for path in list(wanted):
        beside = str(Path(path).parent / LM_DECODE_NAME)
        if beside in present:
            wanted.add(beside)
    config_rel = locate(config, present) if config else None
    if config_rel is not None:
        try:
            cfg = yaml.safe_load(read(config_rel) or "")
        except yaml.YAMLError:
            cfg = None
        tokens = cfg.get("token_list") if isinstance(cfg, Mapping) else None
        if isinstance(tokens, str) and (where := locate(tokens, present)) is not None:
            wanted.add(where)
    return sorted(wanted)
