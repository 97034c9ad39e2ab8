"""Language models beside an ASR model: find them, check them, decode with them, train them with ESPnet's LM task.

Where an LM lives (one `LanguageModel` whichever it is):

* an experiment dir OUT: `OUT/lm/` (`config.yaml`, `model.pth`, `decode.yaml` with the chosen `lm_weight`), written
  by `train_lm` (`espzoo lm train OUT --text TEXT`, or `finetune --lm-text`);
* a Hub repo or an export: the files its `meta.yaml` names (`files.lm_file`, `yaml_files.lm_train_config`, as
  ESPnet's packer writes them), with `decode.yaml` beside the config when espzoo exported it;
* any folder passed as `--lm DIR`: one of the above, or a folder with an LM `config.yaml` and one `.pth`.

Decoding fuses the LM the way ESPnet's recipes do: `Speech2Text(lm_train_config=..., lm_weight=W)`, ESPnet's own
scorer in its beam search (CTC-only models too: CTC prefix scores plus the LM, no attention decoder). The LM's
weights are loaded by espzoo with a weights-only load (hub checkpoints are untrusted), never by ESPnet's unpickler.

Training (espzoo.train.lm_train) is ESPnet's own LM task (`python -m espnet2.bin.lm_train`, its trainer, its config),
on the ASR model's own tokens (its token list, its tokenizer: char, BPE, or a fine-tune's new vocabulary), so the
LM scores exactly the tokens the decoder proposes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from espzoo.errors import LanguageModelError
from espzoo.repo import CONFIG_NAME, LM_DECODE_NAME, LM_DIR, MODEL_NAME, meta_lm_paths

RECORD_NAME = "espzoo_lm.json"  # what train_lm did: text, lines, tokens, epochs, perplexity, init
DEFAULT_WEIGHT = 0.3
MAX_WEIGHT = 10.0
ARCHITECTURES = ("lstm", "transformer")


@dataclass(frozen=True)
class LanguageModel:
    """A token-level ESPnet LM: its training config (token list inline), its checkpoint, its default weight."""

    config_path: Path
    checkpoint: Path
    config: dict[str, Any]  # token_list inlined
    weight: float | None  # the shipped decode weight (decode.yaml), None: not said
    source: str  # where it was found, for messages and --json

    @property
    def tokens(self) -> list[str]:
        return list(self.config.get("token_list") or [])

    def describe(self) -> dict[str, Any]:
        return {"path": self.source, "config": str(self.config_path), "file": str(self.checkpoint),
                "type": self.config.get("lm"), "vocab_size": len(self.tokens)}


# --------------------------------------------------------------------------------------------------- finding


def model_lm(root: Path, kind: str) -> LanguageModel | None:
    """The LM that comes with a model: OUT/lm for an experiment dir, else what the folder's meta.yaml names."""
    root = Path(root)
    if kind == "experiment":
        folder = root / LM_DIR
        return lm_folder(folder) if (folder / CONFIG_NAME).is_file() else None
    return _meta_lm(root)


def open_lm(path: str | Path) -> LanguageModel:
    """The LM in `path`: an LM folder (config.yaml and a .pth), an OUT with OUT/lm, or a repo/export folder whose
    meta.yaml names one."""
    path = Path(path)
    if not path.is_dir():
        raise LanguageModelError(f"--lm {path}: no such folder; pass an LM folder, an experiment dir with lm/, a "
                                 "model folder whose meta.yaml names an LM, or `none`.")
    if (path / LM_DIR / CONFIG_NAME).is_file():
        return lm_folder(path / LM_DIR)
    meta = _meta_lm(path)
    if meta is not None:
        return meta
    if (path / CONFIG_NAME).is_file():
        return lm_folder(path)
    raise LanguageModelError(f"--lm {path} holds no language model (no config.yaml with a .pth, no lm/, no "
                             "lm_file in meta.yaml); train one with `espzoo lm train`.")


def _meta_lm(root: Path) -> LanguageModel | None:
    from espzoo.repo import locate

    meta_path = root / "meta.yaml"
    if not meta_path.is_file():
        return None
    config, checkpoint = meta_lm_paths(_read_yaml(meta_path))
    if not config or not checkpoint:
        return None
    present = [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() or p.is_symlink()]
    config_rel, checkpoint_rel = locate(config, present), locate(checkpoint, present)
    if config_rel is None or checkpoint_rel is None:
        missing = config if config_rel is None else checkpoint
        raise LanguageModelError(f"{meta_path} names the LM file {missing}, which is not in {root}; pull the repo "
                                 "again without --no-lm, or decode with --lm none.")
    return _lm(root / config_rel, root / checkpoint_rel, root, source=str(root))


def lm_folder(folder: Path) -> LanguageModel:
    config = folder / CONFIG_NAME
    if (folder / MODEL_NAME).is_file():
        checkpoint = folder / MODEL_NAME
    else:
        from espzoo.repo import best_checkpoint

        found = best_checkpoint(sorted(p.name for p in folder.glob("*.pth")))
        if found is None:
            raise LanguageModelError(f"{folder} has an LM config but no checkpoint (.pth); train it again with "
                                     "`espzoo lm train`.")
        checkpoint = folder / found
    return _lm(config, checkpoint, folder, source=str(folder))


def _lm(config_path: Path, checkpoint: Path, root: Path, *, source: str) -> LanguageModel:
    config = _read_yaml(config_path)
    if not isinstance(config, dict) or "lm" not in config:
        raise LanguageModelError(f"{config_path} is not an ESPnet LM training config (no `lm:` key); pass the "
                                 "config ESPnet's lm_train wrote.")
    tokens = config.get("token_list")
    if isinstance(tokens, str):  # a path, relative to the repo root (ESPnet recipes) or to the config's folder
        candidates = [root / tokens, config_path.parent / tokens, root / Path(tokens).name]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise LanguageModelError(f"{config_path} names the token list {tokens}, which is not in {root}; pull the "
                                     "repo's token list too.")
        tokens = [line.strip() for line in found.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not isinstance(tokens, list) or not tokens:
        raise LanguageModelError(f"{config_path} has no token_list; pass the config ESPnet's lm_train wrote.")
    config = dict(config, token_list=[str(t) for t in tokens])
    return LanguageModel(config_path, checkpoint, config, _decode_weight(config_path.parent, root), source)


def _decode_weight(folder: Path, root: Path) -> float | None:
    """decode.yaml beside the LM config (espzoo's), else a recipe decode config in the repo (conf/decode*.yaml)."""
    candidates = [folder / LM_DECODE_NAME, *sorted(root.glob("conf/decode*.yaml")), *sorted(root.glob("decode*.yaml"))]
    for path in candidates:
        data = _read_yaml(path) if path.is_file() else None
        if isinstance(data, Mapping) and isinstance(data.get("lm_weight"), (int, float)):
            return float(data["lm_weight"])
    return None


def lm_summary(root: str | Path) -> str | None:
    """One line for `espzoo info`: the LM a pulled repo or folder has (or names without holding it), None: none."""
    root = Path(root)
    config, checkpoint = meta_lm_paths(_read_yaml(root / "meta.yaml")) if (root / "meta.yaml").is_file() else (None,
                                                                                                               None)
    if not config or not checkpoint:
        return None
    try:
        lm = _meta_lm(root)
    except LanguageModelError:
        return f"{checkpoint} (named in meta.yaml, not pulled: pull without --no-lm)"
    if lm is None:
        return None
    weight = lm.weight if lm.weight is not None else DEFAULT_WEIGHT
    return (f"{checkpoint} ({lm.config.get('lm')}, {len(lm.tokens)} tokens, decode weight {weight:g}"
            f"{'' if lm.weight is not None else ' (default)'})")


# --------------------------------------------------------------------------------------------------- decoding


def parse_weights(text: str | float | Sequence[float]) -> tuple[float, ...]:
    """`0.3` or `0,0.1,0.3,0.5` (a sweep) as weights; each must be a number from 0 to MAX_WEIGHT."""
    items = [text] if isinstance(text, (int, float)) else (text.split(",") if isinstance(text, str) else list(text))
    weights = []
    for item in items:
        try:
            value = float(str(item).strip())
        except ValueError:
            raise LanguageModelError(f"--lm-weight {item!r} is not a number; pass one like 0.3, or a list like "
                                     "0,0.1,0.3,0.5.") from None
        check_weight(value)
        weights.append(value)
    if not weights:
        raise LanguageModelError("--lm-weight is empty; pass one like 0.3, or a list like 0,0.1,0.3,0.5.")
    return tuple(weights)


def single_weight(text: str | None) -> float | None:
    """One --lm-weight (transcribe): None when not given."""
    if text is None:
        return None
    weights = parse_weights(text)
    if len(weights) > 1:
        raise LanguageModelError(f"--lm-weight {text} names {len(weights)} weights; transcribe takes one (sweep "
                                 "weights with evaluate).")
    return weights[0]


def check_weight(value: float) -> float:
    if not (math.isfinite(value) and 0.0 <= value <= MAX_WEIGHT):
        raise LanguageModelError(f"--lm-weight {value:g} is out of range; pass a weight from 0 to {MAX_WEIGHT:g} "
                                 f"(0 turns the LM off, {DEFAULT_WEIGHT:g} is the usual start).")
    return value


def decode_lm(root: Path, kind: str, choice: str | None) -> LanguageModel | None:
    """The LM to decode with: `choice` None or "auto" is the model's own (None when it has none), "none" none,
    anything else a folder (open_lm)."""
    if choice is not None and choice.strip().lower() == "none":
        return None
    if choice is None or choice.strip().lower() == "auto":
        return model_lm(root, kind)
    return open_lm(choice)


def check_vocabulary(lm: LanguageModel, tokens: Sequence[str], model: str) -> None:
    """Refuse an LM whose tokens are not the model's: fusing it would score other tokens than those proposed."""
    lm_tokens = lm.tokens
    if len(lm_tokens) != len(tokens):
        raise LanguageModelError(
            f"The LM {lm.source} has a vocabulary of {len(lm_tokens)} tokens but the model {model} has "
            f"{len(tokens)}; train an LM on the model's own tokens with `espzoo lm train {model} --text TEXT`.")
    differ = sum(a != b for a, b in zip(lm_tokens, tokens, strict=True))
    if differ:
        raise LanguageModelError(
            f"The LM {lm.source} has {len(lm_tokens)} tokens like the model {model}, but {differ} of them differ; "
            f"train an LM on the model's own tokens with `espzoo lm train {model} --text TEXT`.")


def weight_in_use(lm: LanguageModel | None, option: float | None) -> float:
    """The option, else the LM's shipped decode weight, else DEFAULT_WEIGHT (0 without an LM)."""
    if lm is None:
        return 0.0
    if option is not None:
        return check_weight(option)
    return lm.weight if lm.weight is not None else DEFAULT_WEIGHT


def write_config(lm: LanguageModel, folder: Path) -> Path:
    """The LM config with its token list inline, for Speech2Text(lm_train_config=...) to build the LM from."""
    path = folder / "lm_config.yaml"
    lm_conf = dict(lm.config.get("lm_conf") or {})
    if "dropout_rate" in lm_conf:  # no dropout when decoding (and no torch warning about a 1-layer LSTM's)
        lm_conf["dropout_rate"] = 0.0
    config = dict(lm.config, bpemodel=None, lm_conf=lm_conf)
    path.write_text(yaml.safe_dump(config, allow_unicode=True, sort_keys=False),
                    encoding="utf-8")
    return path


def load_into(speech2text: Any, lm: LanguageModel) -> None:
    """Load the LM's weights (weights-only) into the scorer Speech2Text built from its config."""
    from espzoo.models.bundle import load_state_dict

    scorer = speech2text.beam_search.full_scorers.get("lm") if speech2text.beam_search is not None else None
    if scorer is None:
        raise LanguageModelError(f"ESPnet's beam search built no LM scorer for {lm.source}; decode with --lm none.")
    state = load_state_dict(lm.checkpoint)  # refuses a pickle that would run code
    inner = {k.removeprefix("lm."): v for k, v in state.items() if k.startswith("lm.")} or state
    missing, unexpected = scorer.load_state_dict(inner, strict=False)
    if missing or unexpected:
        names = ", ".join((list(missing) + list(unexpected))[:4])
        raise LanguageModelError(f"The LM checkpoint {lm.checkpoint} does not fit its config {lm.config_path} "
                                 f"({names}); pass the checkpoint trained with that config.")


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise LanguageModelError(f"{path} cannot be read as YAML ({err}); replace it with the file ESPnet wrote.")\
            from None
