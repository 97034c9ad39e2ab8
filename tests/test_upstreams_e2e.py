"""An SSL-front-end model and a Whisper-encoder model fine-tune 1 epoch and decode offline, from their folder
alone: `espzoo finetune` then `espzoo evaluate`, with HF_HUB_OFFLINE and every HTTP(S) request sent to a dead
proxy on 127.0.0.1 (a download attempt fails the run)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
import yaml
from _hubtools import ESPZOO
from test_finetune import SPEECH, subset
from test_generality import _experiment
from test_upstreams import _tiny_wavlm_shapes, _wavlm_config

from espzoo.model import build_model


def _offline_env(hf_home: Path) -> dict[str, str]:
    dead = "http://127.0.0.1:9"  # the discard port: nothing answers
    return dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(hf_home), HTTP_PROXY=dead, HTTPS_PROXY=dead,
                http_proxy=dead, https_proxy=dead, NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")


@pytest.mark.parametrize("family", ["s3prl_wavlm", "whisper"])
def test_finetune_and_evaluate_offline(family: str, tmp_path: Path) -> None:
    pre = tmp_path / "pre"
    if family == "s3prl_wavlm":
        config = _wavlm_config(pre)
        torch.manual_seed(3)
        torch.save(build_model(config, reference=_tiny_wavlm_shapes()).state_dict(), pre / "model.pth")
        (pre / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    else:  # a Whisper encoder with ESPnet's decoder and tokens
        pre.mkdir()
        _experiment("whisper", pre)
    train = subset(SPEECH / "train", tmp_path / "train", 8)
    dev = subset(SPEECH / "dev", tmp_path / "dev", 3)
    test = subset(SPEECH / "test", tmp_path / "test", 2)
    env = _offline_env(tmp_path / "hf")
    out = tmp_path / "out"
    run = subprocess.run([ESPZOO, "finetune", str(pre), "--train", str(train), "--valid", str(dev), "--out", str(out),
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
