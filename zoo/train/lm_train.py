"""Training a language model on an ASR model's own tokens with ESPnet's LM task (`espzoo lm train`, `finetune
--lm-text`): `python -m espnet2.bin.lm_train`, its trainer, its config, as a child process.

The text is tokenized here with ESPnet's own tokenizer and cleaner for the model (char, BPE, a fine-tune's new
vocabulary), lines with no usable token are dropped, and the shape files ESPnet's samplers read are written from
those counts (no collect_stats run needed). The LM lands in OUT/lm (or --out) once training succeeded: the folder is
replaced whole, with the best epoch's weights as plain tensors, a portable config and the decode weight.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from espzoo.errors import LanguageModelError, TrainError
from espzoo.models.lm import (
    ARCHITECTURES,
    DEFAULT_WEIGHT,
    RECORD_NAME,
    LanguageModel,
    check_vocabulary,
    check_weight,
    model_lm,
    open_lm,
)
from espzoo.repo import CONFIG_NAME, LM_DECODE_NAME, LM_DIR, MODEL_NAME
from espzoo.utils.fs import replace_dir, write_text


@dataclass(frozen=True)
class LMTrainOptions:
    """A small LM for CPUs: one LSTM layer of 256 units, or a 2-layer transformer (d=128), a few epochs."""

    arch: str = "lstm"
    layers: int | None = None  # None: 1 for lstm, 2 for transformer
    units: int = 256
    max_epoch: int = 20
    batch_size: int = 16
    lr: float = 2e-3
    dropout: float = 0.1
    seed: int = 0
    valid_share: float = 0.1  # held out of TEXT for ESPnet's validation (and the best-epoch choice)
    valid_text: str | None = None  # a separate validation text instead
    text_column: str | None = None
    init: str = "auto"  # auto: the model's own LM when its tokens are the model's; none: from scratch; or a DIR
    weight: float | None = None  # decode weight written into decode.yaml (default DEFAULT_WEIGHT)

    def __post_init__(self) -> None:
        if self.arch not in ARCHITECTURES:
            raise LanguageModelError(f"LM architecture {self.arch!r} is unknown; use one of "
                                     f"{', '.join(ARCHITECTURES)}.")
        if self.max_epoch < 1 or self.batch_size < 1 or self.units < 1 or (self.layers is not None and self.layers < 1):
            raise LanguageModelError("--epochs, --batch-size, --units and --layers take 1 or more.")
        if not 0.0 < self.valid_share < 1.0:
            raise LanguageModelError(f"valid share {self.valid_share} must lie between 0 and 1 (0.1 holds out 10%).")
        if self.weight is not None:
            check_weight(self.weight)


@dataclass(frozen=True)
class LMTrainResult:
    path: Path  # the LM folder written
    lines: int  # training lines used
    tokens: int  # tokens in them
    dropped: int  # lines with no token of the model's vocabulary
    epochs: int
    perplexity: float | None  # the best epoch's validation perplexity
    init: str | None  # the LM fine-tuned from, None: from scratch
    weight: float
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {**{k: getattr(self, k) for k in self.__dataclass_fields__}, "path": str(self.path)}


def train_lm(model: str | Path, text: str | Path, out: str | Path | None = None,
             options: LMTrainOptions | None = None) -> LMTrainResult:
    """Train a token-level LM on the model's own tokens with ESPnet's LM task; write it to `out` (default: OUT/lm
    when `model` is an experiment dir). The folder is replaced whole once training succeeded."""
    import time

    from espzoo.decode.recognizer import locate_model
    from espzoo.transfer.vocab import read_texts

    options = options or LMTrainOptions()
    started = time.monotonic()
    files = locate_model(model)
    if files.kind not in ("experiment", "hub"):
        raise LanguageModelError(f"{model} is an adapter; export it merged (espzoo export --merge) and train the LM "
                                 "for that.")
    if out is None:
        if files.kind != "experiment":
            raise LanguageModelError(f"{model} is not an experiment dir; pass --out DIR for the LM folder.")
        out = files.root / LM_DIR
    out = Path(out).resolve()
    config = files.config
    tokens = _tokens_of(config)
    texts = read_texts(Path(text), options.text_column)
    ids, dropped = tokenize_for(texts, config, tokens)
    if not ids:
        raise LanguageModelError(f"{text} has no tokens of the model's vocabulary ({len(tokens)} "
                                 f"{config.get('token_type', '')} tokens); give text in the model's language "
                                 "and script.")
    if options.valid_text:
        valid_ids, _ = tokenize_for(read_texts(Path(options.valid_text), options.text_column), config, tokens)
        train_ids = ids
    else:
        every = max(2, round(1 / options.valid_share))
        valid_ids = [row for i, row in enumerate(ids) if i % every == every - 1] or ids[-1:]
        train_ids = [row for i, row in enumerate(ids) if i % every != every - 1] or ids
    if not valid_ids:
        raise LanguageModelError(f"{options.valid_text} has no tokens of the model's vocabulary; give text in the "
                                 "model's language and script.")
    init = _init_lm(files.root, files.kind, files.source, tokens, options.init)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".lm-train-", dir=out.parent))
    try:
        lm_config = _train_config(config, tokens, options, init, work, train_ids, valid_ids, texts_raw=texts)
        log = work / "train.log"
        _run_lm_train(work / "train_config.yaml", lm_config, log)
        best = work / "espnet" / "valid.loss.best.pth"
        if not best.exists():
            raise TrainError(f"ESPnet's lm_train saved no best checkpoint; see its log {log}.")
        result_dir = work / "result"
        result_dir.mkdir()
        import torch

        from espzoo.models.bundle import load_state_dict

        torch.save(load_state_dict(best.resolve()), result_dir / MODEL_NAME)  # plain tensors, no training state
        saved = _read_yaml(work / "espnet" / "config.yaml")
        saved = _portable_config(saved if isinstance(saved, dict) else lm_config)
        if config.get("bpemodel") and Path(str(config["bpemodel"])).is_file():
            shutil.copyfile(str(config["bpemodel"]), result_dir / "bpe.model")
            saved["bpemodel"] = "bpe.model"
        write_text(result_dir / CONFIG_NAME, yaml.safe_dump(saved, allow_unicode=True, sort_keys=False))
        weight = options.weight if options.weight is not None else DEFAULT_WEIGHT
        write_text(result_dir / LM_DECODE_NAME, yaml.safe_dump({"lm_weight": weight}))
        shutil.copyfile(log, result_dir / "train.log")
        epochs, perplexity = _log_summary(log)
        result = LMTrainResult(result_dir, len(train_ids), sum(len(r) for r in train_ids), dropped, epochs,
                               perplexity, init.source if init else None, weight, 0.0)
        write_text(result_dir / RECORD_NAME, json.dumps(
            {**result.to_dict(), "text": str(text), "path": None, "seconds": None}, indent=2, ensure_ascii=False))
        replace_dir(result_dir, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return LMTrainResult(out, result.lines, result.tokens, dropped, epochs, perplexity, result.init, weight,
                         time.monotonic() - started)


def set_weight(model_or_lm: str | Path, weight: float) -> Path:
    """Write `weight` as the default decode weight of OUT/lm (or of an LM folder); returns the decode.yaml."""
    check_weight(weight)
    path = Path(model_or_lm)
    folder = path / LM_DIR if (path / LM_DIR / CONFIG_NAME).is_file() else path
    if not (folder / CONFIG_NAME).is_file():
        raise LanguageModelError(f"{path} holds no LM (no lm/config.yaml); train one with `espzoo lm train`.")
    return write_text(folder / LM_DECODE_NAME, yaml.safe_dump({"lm_weight": float(weight)}))


def _tokens_of(config: Mapping[str, Any]) -> list[str]:
    tokens = config.get("token_list")
    if isinstance(tokens, str):
        tokens = [line.strip() for line in Path(tokens).read_text(encoding="utf-8").splitlines() if line.strip()]
    return [str(t) for t in tokens or []]


def tokenize_for(texts: Sequence[str], config: Mapping[str, Any], tokens: Sequence[str]) -> tuple[list[list[int]], int]:
    """Each text as the model's token ids (ESPnet's tokenizer and cleaner, as its preprocessor does), with `<unk>`
    left out of the count of usable tokens; lines with none are dropped (their count is returned)."""
    from espzoo.models.espnet_env import import_asr_task

    import_asr_task()  # the offline NLTK setup first: ESPnet 202511's text chain imports g2p_en, which downloads
    from espnet2.text.build_tokenizer import build_tokenizer
    from espnet2.text.cleaner import TextCleaner
    from espnet2.text.token_id_converter import TokenIDConverter

    bpemodel = config.get("bpemodel")
    tokenizer = build_tokenizer(token_type=str(config.get("token_type") or "char"),
                                bpemodel=str(bpemodel) if bpemodel else None,
                                non_linguistic_symbols=config.get("non_linguistic_symbols"),
                                g2p_type=config.get("g2p"))
    cleaner = TextCleaner(config.get("cleaner"))
    unk = "<unk>" if "<unk>" in tokens else str(tokens[1] if len(tokens) > 1 else tokens[0])
    converter = TokenIDConverter(list(tokens), unk_symbol=unk)
    unk_id = converter.tokens2ids([unk])[0]
    # A text's bare word boundaries (char <space>, a lone BPE "▁") say nothing about the language: not usable.
    unusable = {unk_id, *(i for i, t in enumerate(tokens) if t in ("<space>", "\u2581", "<blank>", "<sos/eos>"))}
    rows, dropped = [], 0
    for text in texts:
        ids = converter.tokens2ids(tokenizer.text2tokens(cleaner(text.strip())))
        if any(i not in unusable for i in ids):
            rows.append(ids)
        else:
            dropped += 1
    return rows, dropped


def _init_lm(root: Path, kind: str, source: str, tokens: Sequence[str], choice: str) -> LanguageModel | None:
    choice = (choice or "auto").strip()
    if choice.lower() == "none":
        return None
    if choice.lower() == "auto":
        lm = model_lm(root, kind)
        if lm is None or lm.tokens != list(tokens):
            return None  # nothing to start from, or another vocabulary (a fine-tune's new tokens): from scratch
        return lm
    lm = open_lm(choice)
    check_vocabulary(lm, tokens, source)
    return lm


def _train_config(config: Mapping[str, Any], tokens: list[str], options: LMTrainOptions, init: LanguageModel | None,
                  work: Path, train_ids: list[list[int]], valid_ids: list[list[int]], *, texts_raw: Sequence[str]
                  ) -> dict[str, Any]:
    """ESPnet's lm_train config: the model's tokens and tokenizer, our data files and shapes, a small LM."""
    data = {}
    for name, rows in (("train", train_ids), ("valid", valid_ids)):
        folder = work / "data" / name
        folder.mkdir(parents=True)
        # The text ESPnet's preprocessor tokenizes: the model's tokens joined back, so what it reads is exactly
        # what was counted here (ESPnet's tokenizers round-trip their own tokens' text).
        keys = [f"{name}_{i:06d}" for i in range(len(rows))]
        lines = [f"{k} {_ids_text(r, tokens, config)}\n" for k, r in zip(keys, rows, strict=True)]
        (folder / "text").write_text("".join(lines), encoding="utf-8")
        shapes = [f"{k} {len(r) + 1}\n" for k, r in zip(keys, rows, strict=True)]
        (folder / "shape").write_text("".join(shapes), encoding="utf-8")
        data[name] = folder
    if init is not None:  # fine-tune: the LM's own architecture, its weights (checked, plain tensors) as init
        import torch

        from espzoo.models.bundle import load_state_dict

        clean = work / "init_lm.pth"
        torch.save(load_state_dict(init.checkpoint), clean)
        lm, lm_conf, init_param = init.config["lm"], init.config.get("lm_conf") or {}, [str(clean)]
    elif options.arch == "lstm":
        lm, init_param = "seq_rnn", []
        lm_conf = {"unit": options.units, "nlayers": options.layers or 1, "rnn_type": "lstm",
                   "dropout_rate": options.dropout}
    else:
        lm, init_param = "transformer", []
        lm_conf = {"pos_enc": None, "embed_unit": 128, "att_unit": 128, "head": 2, "unit": options.units,
                   "layer": options.layers or 2, "dropout_rate": options.dropout}
    bpemodel = config.get("bpemodel")
    return {
        "lm": lm, "lm_conf": lm_conf, "init_param": init_param,
        "token_list": list(tokens), "token_type": str(config.get("token_type") or "char"),
        "bpemodel": str(bpemodel) if bpemodel else None,
        "non_linguistic_symbols": config.get("non_linguistic_symbols"), "cleaner": config.get("cleaner"),
        "g2p": config.get("g2p"),
        "train_data_path_and_name_and_type": [[str(data["train"] / "text"), "text", "text"]],
        "valid_data_path_and_name_and_type": [[str(data["valid"] / "text"), "text", "text"]],
        "train_shape_file": [str(data["train"] / "shape")], "valid_shape_file": [str(data["valid"] / "shape")],
        "output_dir": str(work / "espnet"), "ngpu": 0, "seed": options.seed, "num_workers": 0,
        "max_epoch": options.max_epoch, "batch_type": "folded", "batch_size": options.batch_size, "fold_length": [150],
        "optim": "adam", "optim_conf": {"lr": options.lr}, "scheduler": None,
        "best_model_criterion": [["valid", "loss", "min"]], "keep_nbest_models": 1,
        "use_tensorboard": False, "use_matplotlib": False, "log_interval": 50, "patience": None,
    }


def _ids_text(ids: list[int], tokens: Sequence[str], config: Mapping[str, Any]) -> str:
    token_type = str(config.get("token_type") or "char")
    pieces = [tokens[i] for i in ids]
    if token_type == "char":
        return "".join(" " if p == "<space>" else p for p in pieces)
    if token_type == "bpe":
        return "".join(pieces).replace("\u2581", " ").strip()
    return " ".join(pieces)


def _run_lm_train(conf_path: Path, lm_config: dict[str, Any], log: Path) -> None:
    """`python -m espnet2.bin.lm_train --config CONF` as a child process, its output in `log`."""
    from espzoo.models.espnet_env import espnet_env

    write_text(conf_path, yaml.safe_dump(lm_config, allow_unicode=True, sort_keys=False))
    env = espnet_env()
    env.setdefault("PYTHONUNBUFFERED", "1")
    env["OMP_NUM_THREADS"] = env.get("OMP_NUM_THREADS") or str(max(1, min(4, os.cpu_count() or 1)))
    with log.open("wb") as f:
        proc = subprocess.Popen([sys.executable, "-m", "espnet2.bin.lm_train", "--config", str(conf_path)],
                                stdout=f, stderr=subprocess.STDOUT, env=env)
        try:
            code = proc.wait()
        except BaseException:
            proc.terminate()
            proc.wait()
            raise
    if code != 0:
        tail = "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-12:])
        raise TrainError(f"ESPnet's lm_train failed (exit {code}). Its last lines:\n{tail}")


def _log_summary(log: Path) -> tuple[int, float | None]:
    from espzoo.train.log import parse_results_line

    epochs, best = 0, None
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        parsed = parse_results_line(line)
        if parsed is None:
            continue
        epoch, results = parsed
        epochs = max(epochs, epoch)
        loss = (results.get("valid") or {}).get("loss")  # nats per token: the perplexity is exp(loss)
        if isinstance(loss, (int, float)) and (best is None or math.exp(loss) < best):
            best = math.exp(loss)
    return epochs, best


def _portable_config(config: dict[str, Any]) -> dict[str, Any]:
    """The saved LM config without this run's temporary paths (they mean nothing once the LM is moved)."""
    config = dict(config)
    for key in ("train_data_path_and_name_and_type", "valid_data_path_and_name_and_type", "train_shape_file",
                "valid_shape_file", "init_param"):
        config[key] = []
    config["output_dir"] = "."
    config["bpemodel"] = None
    return config


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
