"""An SSL-front-end model and a Whisper-encoder model, published in hub layout and served by espzoo's mirror on
127.0.0.1: `espzoo pull` from the mirror, then `espzoo finetune` 1 epoch and `espzoo evaluate` from the HF cache
alone, with HF_HUB_OFFLINE and every HTTP(S) request sent to a dead proxy on 127.0.0.1 (a download attempt of
the upstream weights fails the run), and no s3prl or Whisper download cache present (a fresh HOME)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
import yaml
from _hubtools import ESPZOO, SPEECH, client_env, subset
from _models import family_experiment, tiny_wavlm_shapes, wavlm_config

from espzoo.models.build import build_model
from espzoo.serve.server import MirrorServer


def _offline_env(home: Path) -> dict[str, str]:
    dead = "http://127.0.0.1:9"  # the discard port: nothing answers
    return dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(home / "hf"), HOME=str(home), TORCH_HOME=str(home / "t"),
                HTTP_PROXY=dead, HTTPS_PROXY=dead, http_proxy=dead, https_proxy=dead,
                NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")


def _publish(family: str, repo: Path) -> None:
    """The model of `family` in the layout ESPnet uploads: meta.yaml naming exp/.../config.yaml and the checkpoint."""
    exp = repo / "exp" / "asr_train_raw_en_char"
    exp.mkdir(parents=True)
    if family == "s3prl_wavlm":
        config = wavlm_config(exp)
        torch.manual_seed(3)
        torch.save(build_model(config, reference=tiny_wavlm_shapes()).state_dict(), exp / "valid.acc.ave.pth")
        (exp / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    else:  # a Whisper encoder with ESPnet's decoder and tokens
        family_experiment("whisper", exp)
        (exp / "model.pth").rename(exp / "valid.acc.ave.pth")
    (repo / "meta.yaml").write_text(yaml.safe_dump({"espnet": "202511", "files": {
        "asr_model_file": "exp/asr_train_raw_en_char/valid.acc.ave.pth"}, "yaml_files": {
        "asr_train_config": "exp/asr_train_raw_en_char/config.yaml"}}))
    (repo / "README.md").write_text("---\ntags:\n- espnet\nlanguage: en\n---\n# test model\n")


@pytest.mark.parametrize("family", ["s3prl_wavlm", "whisper"])
def test_pulled_from_the_mirror_then_finetune_and_evaluate_offline(family: str, tmp_path: Path) -> None:
    repo_id = f"espzoo-test/{family.replace('_', '-')}"
    _publish(family, tmp_path / "root" / repo_id)
    home = tmp_path / "home"
    server = MirrorServer(tmp_path / "root")
    url = server.start()
    try:
        pulled = subprocess.run([ESPZOO, "pull", repo_id, "--json"], capture_output=True, text=True, timeout=600,
                                env=client_env(url, home / "hf", HOME=str(home)))
    finally:
        server.stop()  # from here on nothing answers: the cache alone
    assert pulled.returncode == 0, pulled.stderr[-3000:]
    train = subset(SPEECH / "train", tmp_path / "train", 8)
    dev = subset(SPEECH / "dev", tmp_path / "dev", 3)
    test = subset(SPEECH / "test", tmp_path / "test", 2)
    env = _offline_env(home)
    out = tmp_path / "out"
    run = subprocess.run([ESPZOO, "finetune", repo_id, "--train", str(train), "--valid", str(dev), "--out", str(out),
                          "--vocab", "bpe:45", "--max-epoch", "1", "--batch-bins", "400000", "--json"],
                         capture_output=True, text=True, env=env, timeout=1200)
    assert run.returncode == 0, run.stderr[-3000:]
    assert json.loads(run.stdout)["epochs"] == 1
    plan = json.loads((out / "plan.json").read_text(encoding="utf-8"))
    upstream = "frontend.upstream." if family == "s3prl_wavlm" else "encoder.encoders."
    assert all(r["action"] == "load" for r in plan["rows"] if r["target_key"].startswith(upstream))
    run = subprocess.run([ESPZOO, "evaluate", str(out), "--data", str(test), "--json", "--beam", "1"],
                         capture_output=True, text=True, env=env, timeout=1200)
    assert run.returncode == 0, run.stderr[-3000:]
    assert json.loads(run.stdout)["utterances"] == 2
    assert not (home / ".cache" / "s3prl").exists() and not (home / ".cache" / "whisper").exists()
