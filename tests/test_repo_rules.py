"""One table of ESPnet repo layouts drives every caller of the repo rules (espzoo.repo); they must agree.

The callers: hub's remote file selection (on the listing), bundle.open_bundle (the pulled folder), transfer's
sources (`espzoo plan DIR` and `espzoo plan DIR/exp/asr_x`), evaluate's model resolution, the trainer's averaged
checkpoint pick, and finetune's data rate against the rate the trainer checks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from espzoo import repo
from espzoo.data.sources import Dataset
from espzoo.decode import recognizer as decode_recognizer
from espzoo.errors import BundleError, EspzooError
from espzoo.hub import session as hub_session
from espzoo.models import bundle
from espzoo.train import driver as train_driver
from espzoo.train import options as train_options
from espzoo.transfer import sources as transfer_sources

TOKENS = ["<blank>", "<unk>", "a", "b", "<sos/eos>"]


def _config(**extra: Any) -> dict[str, Any]:
    config = {"encoder": "conformer", "decoder": "transformer", "token_list": TOKENS, "token_type": "char",
              "normalize": "global_mvn", "normalize_conf": {"stats_file": "exp/asr_stats/train/feats_stats.npz"},
              "model_conf": {"ctc_weight": 0.3}}
    config.update(extra)
    return config


@dataclass(frozen=True)
class Layout:
    name: str
    files: dict[str, Any]  # path -> a YAML mapping, text, or None (a small binary stand-in for a checkpoint)
    checkpoint: str  # what every caller must call "the model"
    rate: int  # what every caller must resample to
    task: str = "asr"
    extra_selected: tuple[str, ...] = field(default=())


ASR = "exp/asr_x"
STATS = {"exp/asr_stats/train/feats_stats.npz": None}
LAYOUTS = [
    Layout("meta.yaml names the model", {
        "meta.yaml": {"files": {"asr_model_file": f"{ASR}/valid.acc.ave.pth"},
                      "yaml_files": {"asr_train_config": f"{ASR}/config.yaml"}},
        f"{ASR}/config.yaml": _config(frontend_conf={"fs": "16k"}),
        f"{ASR}/valid.acc.ave.pth": None, f"{ASR}/valid.acc.best.pth": None, f"{ASR}/valid.loss.ave.pth": None,
        **STATS}, f"{ASR}/valid.acc.ave.pth", 16000),
    # The divergence of issue 8: bundle took valid.loss.ave, hub and transfer valid.acc.best.
    Layout("no meta.yaml: accuracy beats loss, even best beats average", {
        f"{ASR}/config.yaml": _config(), f"{ASR}/valid.loss.ave.pth": None, f"{ASR}/valid.acc.best.pth": None,
        **STATS}, f"{ASR}/valid.acc.best.pth", 16000),
    Layout("several checkpoints and a language model", {
        f"{ASR}/config.yaml": _config(), f"{ASR}/3epoch.pth": None, f"{ASR}/10epoch.pth": None,
        f"{ASR}/checkpoint.pth": None, f"{ASR}/valid.loss.best.pth": None,
        "exp/lm_train/config.yaml": {"lm": "transformer", "token_list": TOKENS},
        "exp/lm_train/valid.loss.ave.pth": None, **STATS}, f"{ASR}/valid.loss.best.pth", 16000),
    # The other divergence: finetune prepared 8 kHz data, the trainer expected 16 kHz.
    Layout("8 kHz in preprocessor_conf only, token list in a file", {
        f"{ASR}/config.yaml": _config(preprocessor_conf={"fs": 8000}, token_list="data/token_list/char/tokens.txt"),
        "data/token_list/char/tokens.txt": "\n".join(TOKENS) + "\n",
        f"{ASR}/valid.acc.ave_3best.pth": None, **STATS}, f"{ASR}/valid.acc.ave_3best.pth", 8000),
    Layout("44k means 44.1 kHz", {
        f"{ASR}/config.yaml": _config(frontend_conf={"fs": "44k"}), f"{ASR}/valid.acc.ave.pth": None, **STATS},
        f"{ASR}/valid.acc.ave.pth", 44100),
    Layout("s2t keys in meta.yaml", {
        "meta.yaml": {"files": {"s2t_model_file": "exp/s2t_x/valid.total_count.ave_5best.till45epoch.pth"},
                      "yaml_files": {"s2t_train_config": "exp/s2t_x/config.yaml"}},
        "exp/s2t_x/config.yaml": _config(preprocessor="s2t", model_conf={"sym_na": "<na>"},
                                         best_model_criterion=[["valid", "total_count", "max"]]),
        "exp/s2t_x/valid.total_count.ave_5best.till45epoch.pth": None, "exp/s2t_x/valid.acc.best.pth": None,
        **STATS}, "exp/s2t_x/valid.total_count.ave_5best.till45epoch.pth", 16000, task="s2t"),
]


def _write(root: Path, files: dict[str, Any]) -> Path:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if content is None and path.name == "feats_stats.npz":  # opened and checked by bundle: a real one
            np.savez(path, count=np.array(10), sum=np.zeros(80), sum_square=np.ones(80))
        elif content is None:
            path.write_bytes(b"stand-in")
        elif isinstance(content, str):
            path.write_text(content, encoding="utf-8")
        else:
            path.write_text(yaml.safe_dump(content), encoding="utf-8")
    return root


@pytest.mark.parametrize("layout", LAYOUTS, ids=[layout.name for layout in LAYOUTS])
def test_every_caller_agrees_on_each_repo_layout(layout: Layout, tmp_path: Path) -> None:
    root = _write(tmp_path / "repo", layout.files)

    # hub, on the remote listing: downloads exactly one checkpoint, the same one
    selected = hub_session.select_files(list(layout.files), lambda rel: (root / rel).read_text(encoding="utf-8"))
    assert [f for f in selected if repo.is_checkpoint(f)] == [layout.checkpoint]

    # bundle, on the pulled folder: everything it uses was downloaded
    opened = bundle.open_bundle(root)
    assert opened.checkpoint == root / layout.checkpoint
    assert opened.task == layout.task and opened.sample_rate == layout.rate
    used = [opened.config_path, opened.stats_file] + [root / f for f in layout.files if f.endswith("tokens.txt")]
    assert {p.relative_to(root).as_posix() for p in used if p is not None} <= set(selected)
    assert opened.token_list == TOKENS

    # transfer: the repo folder and its training folder name the same weights
    config_dir = opened.config_path.parent
    assert transfer_sources.open_source(str(root)).checkpoint == root / layout.checkpoint
    assert transfer_sources.open_source(str(config_dir)).checkpoint == root / layout.checkpoint

    # the trainer's pick among an ESPnet output folder holding these checkpoints, trained with these criteria
    criteria = opened.config.get("best_model_criterion") or train_options.best_model_criterion(
        opened.config, train_options.TrainOptions())
    assert train_driver._averaged_checkpoint(config_dir, {"best_model_criterion": criteria}) == root / layout.checkpoint

    # finetune prepares data at the rate the trainer then checks: no refusal
    rate = repo.config_sample_rate(transfer_sources.open_source(str(root)).config or {})
    assert rate == layout.rate
    data = Dataset(name="train", dir=tmp_path, num_utterances=1, total_seconds=1.0, sample_rate=rate)
    train_options._check_sample_rate(opened.resolved_config(), data, data)

    if layout.task == "asr":  # evaluate decodes ASR models only
        located = decode_recognizer.locate_model(root)
        assert located.checkpoint == root / layout.checkpoint and located.sample_rate == layout.rate


def test_repeated_tokens_are_refused_naming_the_file(tmp_path: Path) -> None:
    files = dict(LAYOUTS[3].files)
    files["data/token_list/char/tokens.txt"] = "<blank>\na\nb\na\n<sos/eos>\n"
    root = _write(tmp_path / "repo", files)
    with pytest.raises(BundleError, match=r"tokens\.txt repeats 'a'"):
        bundle.open_bundle(root)


@pytest.mark.parametrize(("value", "rate"), [
    (16000, 16000), ("16k", 16000), ("22.05k", 22050), ("44k", 44100), ("44khz (as named)", 44100),
    ("22k", 22050), ("8000", 8000), ("44.1k", 44100), ("fast", None), (None, None), (True, None), (0, None),
])
def test_one_reader_of_sample_rates(value: object, rate: int | None) -> None:
    assert repo.parse_sample_rate(value) == rate


def test_meta_yaml_of_another_task_is_named_in_the_error() -> None:
    named = repo.meta_files({"files": {"tts_model_file": "exp/tts/train.loss.ave.pth"}})
    assert named.task is None and named.kinds == ("tts",)
    with pytest.raises(EspzooError, match="not an ESPnet meta.yaml"):
        repo.meta_files({"just": "text"})
