"""The tiny ESPnet repos and the committed speech are what the other tests believe they are."""

from __future__ import annotations

from pathlib import Path

import pytest
import soundfile as sf
import yaml
from _paths import SPEECH_ROOT

SPEECH = SPEECH_ROOT


@pytest.mark.parametrize(("lang", "counts"), [("en", (130, 10, 10)), ("es", (90, 15, 15))])
def test_speech_assets_are_16k_mono_kaldi_dirs(lang: str, counts: tuple[int, int, int]) -> None:
    for split, count in zip(("train", "dev", "test"), counts, strict=True):
        d = SPEECH / lang / split
        text = dict(line.split(" ", 1) for line in (d / "text").read_text(encoding="utf-8").splitlines())
        wavs = dict(line.split() for line in (d / "wav.scp").read_text().splitlines())
        assert len(text) == count and text.keys() == wavs.keys()
        assert list(text) == sorted(text), "Kaldi dirs are sorted by utterance id"
        for utt in list(wavs)[:5]:
            info = sf.info(d / wavs[utt])
            assert (info.samplerate, info.channels, info.format) == (16000, 1, "FLAC")
            assert 0.8 < info.duration < 3.5, (utt, info.duration)
            assert text[utt] == text[utt].lower().strip()
    if lang == "es":
        chars = set((SPEECH / "es/train/text").read_text(encoding="utf-8"))
        assert {"ñ", "á", "é", "í", "ó", "ú"} <= chars


def _config(repo: Path) -> tuple[Path, dict]:
    path = next(repo.glob("exp/asr_train*/config.yaml"))
    return path, yaml.safe_load(path.read_text(encoding="utf-8"))


@pytest.mark.parametrize("variant", ["char", "bpe", "nometa"])
def test_tiny_repo_layout_matches_espnet_hub_repos(variant: str, request: pytest.FixtureRequest) -> None:
    repo: Path = request.getfixturevalue(f"tiny_repo_{variant}")
    config_path, config = _config(repo)
    front = (repo / "README.md").read_text(encoding="utf-8").split("---")[1]
    assert {"espnet", "audio", "automatic-speech-recognition"} <= set(yaml.safe_load(front)["tags"])
    # Paths stay relative, as ESPnet writes them, and point at files shipped in the repo.
    stats = config["normalize_conf"]["stats_file"]
    assert not Path(stats).is_absolute() and (repo / stats).is_file()
    assert config["encoder"] == "conformer" and config["encoder_conf"]["num_blocks"] == 2
    assert config["model_conf"]["ctc_weight"] == 0.3
    token_file = next(repo.glob("data/*token_list/*/tokens.txt"))
    assert config["token_list"] == token_file.read_text(encoding="utf-8").splitlines()
    if variant == "bpe":
        assert config["token_type"] == "bpe"
        assert config["bpemodel"] == "data/token_list/bpe_unigram30/bpe.model"
        assert (repo / config["bpemodel"]).is_file()
    else:
        assert config["token_type"] == "char" and config["bpemodel"] is None
    if variant == "nometa":
        assert not (repo / "meta.yaml").exists()
        assert stats.startswith("exp/asr_stats_raw_en_char_sp/")
    else:
        meta = yaml.safe_load((repo / "meta.yaml").read_text())
        assert (repo / meta["files"]["asr_model_file"]).is_file()
        assert repo / meta["yaml_files"]["asr_train_config"] == config_path


def test_tiny_repo_checkpoint_loads_strictly_into_the_model_espnet_builds(tiny_repo_char: Path) -> None:
    import argparse

    import torch

    from espzoo.models.espnet_env import import_asr_task

    _, config = _config(tiny_repo_char)
    config["normalize_conf"]["stats_file"] = str(tiny_repo_char / config["normalize_conf"]["stats_file"])
    model = import_asr_task().build_model(argparse.Namespace(**config))
    checkpoint = next(tiny_repo_char.glob("exp/asr_train*/valid.acc.ave_*best.pth"))
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    assert state["ctc.ctc_lo.weight"].shape == (len(config["token_list"]), 64)
    assert sum(p.numel() for p in model.parameters()) < 1_000_000
