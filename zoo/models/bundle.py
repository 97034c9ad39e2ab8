"""An ESPnet model repo (a pulled snapshot folder) opened as one object: config, checkpoint, tokens, stats.

    bundle = open_bundle(snapshot.path)
    bundle.task, bundle.sample_rate, bundle.architecture()
    config = bundle.resolved_config()            # paths made absolute, everything else as published
    state = load_state_dict(bundle.checkpoint)   # tensors only; a pickle that would run code is refused

A snapshot's files are symlinks into the HF cache's blobs: nothing here ever writes into the snapshot.
ESPnet writes the paths in config.yaml relative to the recipe folder it trained in (`exp/...`, `data/...`),
which is the repo root once packed; some repos hold absolute paths from the training machine, or files
at other places than the config says, so each path is looked up in the repo by its trailing parts, then
by its file name. Only keys that hold paths are rewritten (`bpemodel`, `normalize_conf.stats_file`,
`non_linguistic_symbols`, `tokenizer_conf.*`, a string `token_list`): a token such as `exp` or `.` is
vocabulary, not a path, and stays as it is.
"""

from __future__ import annotations

import copy
import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from espzoo import repo
from espzoo.errors import BundleError, UnsafeCheckpointError
from espzoo.repo import (
    BPE_NAME,
    DEFAULT_SAMPLE_RATE,
    STATS_NAME,
    TOKENS_NAME,
    config_sample_rate,
)
from espzoo.tasks import task_of
from espzoo.utils.fs import write_text
from espzoo.utils.yaml_io import load_yaml

_MAX_CONFIG_BYTES = 20_000_000  # an ESPnet config with an inline 50k-token list is ~1 MB
# libyaml's safe loader where PyYAML has it: the pure-Python one takes ~30 s on OWSM's inline 50k-token list.
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
SAFE_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)  # the same text as yaml.safe_dump, ~4x faster


@dataclass
class Bundle:
    root: Path
    task: str  # the task family (espzoo.tasks): what meta.yaml calls its files
    config: dict[str, Any]  # as read from config_path, never modified
    config_path: Path
    checkpoint: Path
    token_list: list[str]
    token_type: str
    bpemodel: Path | None
    stats_file: Path | None
    sample_rate: int | None
    meta: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)

    def resolved_config(self) -> dict[str, Any]:
        """A copy of the config whose path-holding keys point at absolute paths inside this repo."""
        config = copy.deepcopy(self.config)
        if self.bpemodel is not None:
            config["bpemodel"] = str(self.bpemodel)
        if self.stats_file is not None and isinstance(config.get("normalize_conf"), dict):
            config["normalize_conf"]["stats_file"] = str(self.stats_file)
        if isinstance(config.get("token_list"), str):
            found = _locate(self.root, config["token_list"], fallback=TOKENS_NAME)
            if found is not None:
                config["token_list"] = str(found)
        nlsyms = config.get("non_linguistic_symbols")
        if isinstance(nlsyms, str) and nlsyms.lower() != "none":
            found = _locate(self.root, nlsyms)
            if found is not None:
                config["non_linguistic_symbols"] = str(found)
        tokenizer_conf = config.get("tokenizer_conf")
        if isinstance(tokenizer_conf, dict):
            for key, value in tokenizer_conf.items():
                if isinstance(value, str) and _looks_like_path(value):
                    found = _locate(self.root, value)
                    if found is not None:
                        tokenizer_conf[key] = str(found)
        return config

    def write_resolved_config(self, dest: str | os.PathLike[str]) -> Path:
        """Write resolved_config() to `dest` (a file, or `dest/config.yaml` for a folder); never half-written."""
        dest = Path(dest)
        if dest.is_dir():
            dest = dest / "config.yaml"
        if _inside(dest, self.root):
            raise BundleError(f"Refusing to write {dest} inside the model snapshot {self.root}; choose another path.")
        text = yaml.safe_dump(self.resolved_config(), indent=4, sort_keys=False, allow_unicode=True)
        return write_text(dest, text)

    def architecture(self) -> dict[str, Any]:
        """The facts a person compares models by: blocks, sizes, vocabulary, CTC weight, rate."""
        c = self.config
        enc = c.get("encoder_conf") or {}
        dec = c.get("decoder_conf") or {}
        frontend = c.get("frontend_conf") or {}
        return {
            "task": self.task,
            "frontend": c.get("frontend", "default"),
            "ssl_upstream": (frontend.get("frontend_conf") or {}).get("upstream"),  # s3prl frontends
            "n_mels": frontend.get("n_mels"),
            "preencoder": c.get("preencoder"),
            "normalize": c.get("normalize"),
            "encoder": c.get("encoder"),
            "encoder_blocks": enc.get("num_blocks"),
            "encoder_output_size": enc.get("output_size"),
            "attention_heads": enc.get("attention_heads"),
            "linear_units": enc.get("linear_units"),
            "input_layer": enc.get("input_layer"),
            "decoder": c.get("decoder"),
            "decoder_blocks": dec.get("num_blocks"),
            "ctc_weight": (c.get("model_conf") or {}).get("ctc_weight"),
            "token_type": self.token_type,
            "vocab_size": len(self.token_list),
            "sample_rate": self.sample_rate,
            "checkpoint_bytes": self.checkpoint.stat().st_size,
        }


# ------------------------------------------------------------------------------------------ open_bundle


def open_bundle(path: str | os.PathLike[str] | Any) -> Bundle:
    """Open a repo folder (a pulled snapshot or a plain copy; or hub's Snapshot) as an ESPnet ASR or S2T model."""
    root = Path(getattr(path, "path", path)).expanduser().absolute()
    if not root.is_dir():
        raise BundleError(f"Model folder {root} does not exist; pull the model first (espzoo pull REPO).")
    files = _repo_files(root)
    meta = _read_meta(root)
    warnings: list[str] = []
    if meta is not None:
        task, config_path, checkpoint = _files_from_meta(root, meta, files)
    else:
        config_path = _find_config(root, files)
        task = task_of(_load_yaml(config_path) or {}).family
        checkpoint = _find_checkpoint(root, files, config_path.parent, _load_yaml(config_path))
    config = _load_yaml(config_path)
    if not repo.looks_like_train_config(config):
        raise BundleError(f"{config_path} is not an ESPnet ASR/S2T training config (no encoder or token_list).")

    token_type = str(config.get("token_type") or "char")
    bpemodel = None
    bpe_value = config.get("bpemodel")
    if token_type == "bpe":  # a sentencepiece file; other token types name a tokenizer ("whisper_en", HF ids)
        bpemodel = _locate(root, bpe_value or "", fallback=BPE_NAME, files=files)
        if bpemodel is None:
            raise BundleError(
                f"{root} has token_type bpe but no {BPE_NAME} (config says {config.get('bpemodel')!r}); "
                "pull the whole repo (espzoo pull REPO --all)."
            )
    elif isinstance(bpe_value, str) and bpe_value.endswith(".model"):
        bpemodel = _locate(root, bpe_value, files=files)
    stats_file = None
    needs_stats, stats_value = repo.stats_reference(config)
    if needs_stats:
        stats_file = _locate(root, stats_value or "", fallback=STATS_NAME, files=files)
        if stats_file is None:
            raise BundleError(
                f"{root} uses global_mvn but has no {STATS_NAME} (config says "
                f"{stats_value!r}); pull the whole repo (espzoo pull REPO --all)."
            )
        check_stats(stats_file)
    token_list = _token_list(root, config, config_path, files)
    if not token_list:
        raise BundleError(f"{config_path} has no token_list and {root} holds no {TOKENS_NAME}; the repo is incomplete.")
    for key in ("non_linguistic_symbols",):
        value = config.get(key)
        if isinstance(value, str) and value.lower() != "none" and _locate(root, value, files=files) is None:
            warnings.append(f"{key} {value!r} is not in the repo; it is left as published.")
    return Bundle(
        root=root,
        task=task,
        config=config,
        config_path=config_path,
        checkpoint=checkpoint,
        token_list=token_list,
        token_type=token_type,
        bpemodel=bpemodel,
        stats_file=stats_file,
        sample_rate=_sample_rate(root, config),
        meta=meta,
        warnings=warnings,
    )


def check_stats(path: Path) -> None:
    """BundleError (one sentence) unless `path` is a feats_stats.npz as ESPnet's GlobalMVN reads it: numeric arrays
    count, sum and sum_square, loaded without unpickling (an object array would run code, or fail deep in ESPnet)."""
    import zipfile

    import numpy as np

    try:
        with open(path, "rb") as f:
            magic = f.read(6)
    except OSError as err:
        raise BundleError(f"{path} is not a readable {STATS_NAME} ({err}); pull the model again.") from None
    if not magic.startswith((b"PK", b"\x93NUMPY")):  # numpy takes anything else for a pickle
        raise BundleError(f"{path} is not a {STATS_NAME} (neither .npz nor .npy); pull the model again.")
    try:
        stats = np.load(path, allow_pickle=False)
        if isinstance(stats, np.ndarray):  # Kaldi-style stats in one array, which GlobalMVN reads too
            arrays = {"count": stats, "sum": stats, "sum_square": stats}
        else:
            with stats:
                arrays = {key: stats[key] for key in ("count", "sum", "sum_square") if key in stats.files}
    except ValueError as err:
        if "allow_pickle" in str(err) or "Object arrays" in str(err):
            raise BundleError(f"{path} holds Python objects, not numbers, and loading them could run code; use "
                              "normalization stats from a source you trust (or train with --stats new).") from None
        raise BundleError(f"{path} is not a readable {STATS_NAME} ({err}); pull the model again.") from None
    except (OSError, EOFError, zipfile.BadZipFile) as err:
        raise BundleError(f"{path} is not a readable {STATS_NAME} ({err}); pull the model again.") from None
    missing = [key for key in ("count", "sum", "sum_square") if key not in arrays]
    odd = [key for key, array in arrays.items() if array.dtype.kind not in "iuf"]
    if missing or odd:
        what = f"has no {missing[0]}" if missing else f"holds {arrays[odd[0]].dtype} in {odd[0]}"
        raise BundleError(f"{path} {what}; it is not the {STATS_NAME} ESPnet's global_mvn reads (count, sum and "
                          "sum_square as numbers): pull the model again.")


def _read_meta(root: Path) -> dict[str, Any] | None:
    path = root / "meta.yaml"
    if not path.is_file():
        return None
    meta = _load_yaml(path)
    repo.meta_files(meta, str(path))  # refuses a meta.yaml without `files:`
    return meta


def _files_from_meta(root: Path, meta: dict[str, Any], files: list[str]) -> tuple[str, Path, Path]:
    named = repo.meta_files(meta, str(root / "meta.yaml"))
    if named.task is None:
        raise BundleError(
            f"{root} is not an ESPnet ASR or S2T model (its meta.yaml lists {', '.join(named.kinds) or 'no'} files); "
            "choose an ASR model (espzoo search --task asr)."
        )
    found = {}
    for kind, name in (("checkpoint", named.checkpoint), ("config", named.config)):
        path = _locate(root, name, files=files) if name else None
        if path is None:
            raise BundleError(
                f"{root}: meta.yaml names the {kind} {name!r} but it is not in the folder; "
                "pull the whole repo (espzoo pull REPO --all)."
            )
        found[kind] = path
    return named.task, found["config"], found["checkpoint"]


def _find_config(root: Path, files: list[str]) -> Path:
    """The ESPnet training config among the repo's YAML files (decode, LM and stats configs lose)."""
    with_checkpoint = repo.checkpoint_dirs(files)
    candidates = []
    for rel in files:
        path = root / rel
        if not rel.endswith((".yaml", ".yml")) or path.name == "meta.yaml" or path.stat().st_size > _MAX_CONFIG_BYTES:
            continue
        config = _load_yaml(path, quiet=True)
        if repo.looks_like_train_config(config):
            parent = str(PurePosixPath(rel).parent)
            candidates.append((rel, parent in with_checkpoint, bool(config.get("collect_stats"))))
    chosen = repo.choose_config(candidates)
    if chosen is None:
        raise BundleError(
            f"{root} is not an ESPnet ASR model: no ESPnet training config (a YAML with encoder and token_list "
            "keys) was found; check the repo id, or pull everything (espzoo pull REPO --all)."
        )
    return root / chosen


def _find_checkpoint(root: Path, files: list[str], config_dir: Path, config: Any) -> Path:
    """The checkpoint that is "the model" (repo.best_checkpoint): beside the config, the averaged one first."""
    chosen = repo.best_checkpoint(files, config_dir.relative_to(root).as_posix(), repo.config_criteria(config))
    if chosen is None:
        raise BundleError(
            f"{root} has an ESPnet config but no checkpoint (*.pth); pull the whole repo (espzoo pull REPO --all)."
        )
    return root / chosen


def _repo_files(root: Path) -> list[str]:
    """Every file under root as a POSIX path relative to it, skipping hidden folders (.cache/huggingface, .git)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel = Path(dirpath).relative_to(root)
        found += [(rel / n).as_posix() for n in sorted(filenames)]
    return found


def _load_yaml(path: Path, quiet: bool = False) -> Any:
    try:
        return load_yaml(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        if quiet:
            return None
        raise BundleError(f"{path} is not readable YAML ({type(e).__name__}); the repo may be damaged.") from e


# ---------------------------------------------------------------------------------------------- paths


def _looks_like_path(value: str) -> bool:
    return "/" in value or bool(re.search(r"\.(model|txt|npz|json|vocab|yaml|pth)$", value))


def _inside(path: Path, root: Path) -> bool:
    try:
        path.absolute().relative_to(root)
        return True
    except ValueError:
        return False


def _locate(root: Path, value: str | None, fallback: str | None = None, files: list[str] | None = None) -> Path | None:
    """A path from a config, found inside the repo by repo.locate (as written, by trailing parts, by name).

    Returns the path inside the repo (not resolved through symlinks: the snapshot's name for the file).
    """
    found = repo.locate(value, files if files is not None else _repo_files(root), fallback)
    return root / found if found is not None else None


def _token_list(root: Path, config: dict[str, Any], config_path: Path, files: list[str]) -> list[str]:
    tokens = config.get("token_list")
    if isinstance(tokens, list):
        return repo.check_tokens(tokens, str(config_path))
    path = _locate(root, tokens if isinstance(tokens, str) else "", fallback=TOKENS_NAME, files=files)
    if path is None:
        return []
    return repo.parse_token_list(path.read_text(encoding="utf-8"), str(path))


def resolve_config_paths(config: dict[str, Any], root: Path) -> dict[str, Any]:
    """A copy of an experiment dir's `config` whose path keys, when relative and naming a file under `root`,
    are made absolute (token strings are never touched: only the keys that hold paths)."""
    resolved = dict(config)

    def fix(value: Any) -> Any:
        if isinstance(value, str) and value and not Path(value).is_absolute() and (root / value).exists():
            return str((root / value).resolve())
        return value

    for key in ("bpemodel", "token_list", "non_linguistic_symbols"):
        if key in resolved:
            resolved[key] = fix(resolved[key])
    if isinstance(resolved.get("normalize_conf"), dict) and "stats_file" in resolved["normalize_conf"]:
        resolved["normalize_conf"] = {**resolved["normalize_conf"],
                                      "stats_file": fix(resolved["normalize_conf"]["stats_file"])}
    return resolved


def _sample_rate(root: Path, config: dict[str, Any]) -> int | None:
    """The config's rate (repo.config_sample_rate), else the fs a README's config shows, else ESPnet's 16 kHz
    default (what finetune, evaluate and the trainer then use too)."""
    rate = config_sample_rate(config, default=None)
    if rate:
        return rate
    readme = root / "README.md"
    if readme.is_file():
        match = re.search(r"^\s*fs:\s*(\S+)\s*$", readme.read_text(encoding="utf-8", errors="replace"), re.M)
        if match:
            return repo.parse_sample_rate(match.group(1)) or DEFAULT_SAMPLE_RATE
    return DEFAULT_SAMPLE_RATE


# ------------------------------------------------------------------------------------------ checkpoints


def load_state_dict(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A checkpoint's tensors, loaded without unpickling arbitrary objects (memory-mapped where possible);
    see load_state_dict_mapped."""
    return load_state_dict_mapped(path)[0]


def load_state_dict_mapped(path: str | os.PathLike[str]) -> tuple[dict[str, Any], bool]:
    """(a checkpoint's tensors, whether their storages are memory-mapped from the file). Only a mapped state's
    pages may be given back to the kernel (madvise): an unmapped one lives in ordinary memory.

    Raises UnsafeCheckpointError when the pickle asks for anything but tensors and containers (it could
    run code), and BundleError when the file is not a readable checkpoint.
    """
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise BundleError(f"Checkpoint {path} does not exist; pull the model again (espzoo pull REPO).")
    mapped = True
    try:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:
            if "mmap" not in str(e):
                raise
            # Checkpoints saved before torch 1.6's zip format cannot be memory-mapped.
            mapped = False
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=False)
    except pickle.UnpicklingError as e:
        # Asking for a Python global or class is what makes a pickle dangerous; an unknown opcode
        # ("Unsupported operand") only means the bytes are not a pickle at all.
        if re.search(r"GLOBAL|global|class", str(e)) and "Unsupported operand" not in str(e):
            found = re.search(r"GLOBAL ([\w.]+)", str(e))
            what = f" ({found.group(1)})" if found else ""
            raise UnsafeCheckpointError(
                f"Refusing to load checkpoint {path}: its pickle asks for Python objects{what}, not only tensors, "
                "and loading it could run code; use a checkpoint from a source you trust."
            ) from None
        raise BundleError(f"Checkpoint {path} is not a readable PyTorch file ({e}); re-download it.") from None
    # A garbage file fails deep inside the legacy unpickler with whatever it trips on (IndexError, KeyError...).
    except (RuntimeError, EOFError, OSError, ValueError, IndexError, KeyError, TypeError) as e:
        raise BundleError(
            f"Checkpoint {path} is not a readable PyTorch file ({type(e).__name__}: {str(e)[:200]}); "
            "it may be truncated or corrupt: check it with espzoo verify REPO --fix."
        ) from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict) and not _all_tensors(state):
        state = state["model"]  # ESPnet's training checkpoint.pth: {"model": ..., "optimizers": ...}
    if not isinstance(state, dict) or not _all_tensors(state):
        raise BundleError(f"Checkpoint {path} holds no state dict (name -> tensor); it is not an ESPnet model file.")
    return state, mapped


def _all_tensors(state: dict[str, Any]) -> bool:
    import torch

    return all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())
