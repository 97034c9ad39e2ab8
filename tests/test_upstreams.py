"""Whisper-based models build offline from their repo alone: the upstream is built from its architecture (with the
checkpoint's dimensions), never downloaded, and the checkpoint is what the model starts from."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from _models import (
    EN_CHARS,
    tiny_wavlm_shapes,
    tiny_whisper_shapes,
    tiny_xls_r_shapes,
    wavlm_config,
    whisper_config,
)
from _paths import SPEECH_ROOT

from espzoo.errors import ModelConfigError, TransferError
from espzoo.models.build import build_model, describe_target
from espzoo.transfer.apply import apply_plan
from espzoo.transfer.plan import TransferOptions, plan_transfer

SPEECH = SPEECH_ROOT
ES_TEXT = SPEECH / "es" / "train" / "text"


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Any connection beyond 127.0.0.1 fails the test (and is recorded): a download attempt cannot pass."""
    attempts: list[Any] = []
    connect = socket.socket.connect

    def guarded(self: socket.socket, address: Any) -> Any:
        host = address[0] if isinstance(address, tuple) else address
        if host not in ("127.0.0.1", "::1", "localhost") and not isinstance(address, str | bytes):
            attempts.append(address)
            raise OSError(f"test blocks network access to {address}")
        return connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)
    resolve = socket.getaddrinfo

    def guarded_resolve(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in ("127.0.0.1", "::1", "localhost"):
            attempts.append(host)
            raise OSError(f"test blocks name resolution of {host}")
        return resolve(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", guarded_resolve)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return attempts


def _whisper_experiment(folder: Path) -> Path:
    config = whisper_config(folder)
    torch.manual_seed(3)
    model = build_model(config, reference=tiny_whisper_shapes(len(EN_CHARS)))
    torch.save(model.state_dict(), folder / "model.pth")
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return folder


def test_whisper_builds_from_the_checkpoints_dimensions_without_downloading(no_network: list, tmp_path: Path):
    exp = _whisper_experiment(tmp_path / "pre")
    pretrained = torch.load(exp / "model.pth", weights_only=True)
    assert pretrained["encoder.encoders.ln_post.weight"].shape == (48,)  # the tiny-class model at 48 wide
    shapes = {k: tuple(v.shape) for k, v in pretrained.items()}
    target = describe_target(whisper_config(tmp_path / "t"), reference=shapes)
    assert target.shapes == {k: tuple(v.shape) for k, v in pretrained.items()}
    plan = plan_transfer(str(exp), TransferOptions(vocab="keep"))
    assert {r.action for r in plan.rows} == {"load"}
    result = apply_plan(plan, tmp_path / "out")
    model = build_model(yaml.safe_load(result.config.read_text()), reference=target.shapes)
    model.load_state_dict(torch.load(result.checkpoint, weights_only=True), strict=True)
    assert [k for k, v in pretrained.items() if not torch.equal(model.state_dict()[k], v)] == []
    speech = torch.randn(1, 16000)
    encoded, _ = model.encode(speech, torch.tensor([16000]))
    assert encoded.shape[-1] == 48 and torch.isfinite(encoded).all()
    assert no_network == []


def test_whisper_tokenizer_models_keep_their_vocabulary(no_network: list, tmp_path: Path) -> None:
    exp = _whisper_experiment(tmp_path / "pre")
    with pytest.raises(TransferError, match=r"Whisper's own tokenizer .*use --vocab keep"):
        plan_transfer(str(exp), TransferOptions(vocab=f"char:{ES_TEXT}"))
    texts = ES_TEXT.read_text(encoding="utf-8").splitlines()  # finetune passes the transcripts: no coverage report
    plan = plan_transfer(str(exp), TransferOptions(vocab="keep"), texts=texts)
    assert plan.vocabulary.token_type == "whisper_multilingual" and {r.action for r in plan.rows} == {"load"}


def test_an_ssl_front_end_builds_from_the_checkpoint_without_downloading(no_network: list, tmp_path: Path) -> None:
    folder = tmp_path / "pre"
    config = wavlm_config(folder)
    torch.manual_seed(3)
    built = build_model(config, reference=tiny_wavlm_shapes())
    torch.save(built.state_dict(), folder / "model.pth")
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    pretrained = torch.load(folder / "model.pth", weights_only=True)
    assert pretrained["frontend.upstream.upstream.model.encoder.layers.0.fc1.weight"].shape == (64, 48)

    plan = plan_transfer(str(folder), TransferOptions(vocab=f"char:{ES_TEXT}"))
    rows = plan.by_key()
    assert all(rows[k].action == "load" for k in rows if k.startswith("frontend."))
    result = apply_plan(plan, tmp_path / "out")
    adapted = yaml.safe_load(result.config.read_text())
    model = build_model(adapted, reference={k: tuple(v.shape) for k, v in pretrained.items()})
    model.load_state_dict(torch.load(result.checkpoint, weights_only=True), strict=True)
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in pretrained.items() if k.startswith(("frontend.", "encoder.")))
    encoded, _ = model.encode(torch.randn(1, 16000), torch.tensor([16000]))
    assert encoded.shape[-1] == 32 and torch.isfinite(encoded).all()
    assert no_network == []


def test_an_upstream_espzoo_cannot_build_offline_is_one_sentence(no_network: list, tmp_path: Path) -> None:
    config = wavlm_config(tmp_path)
    config["frontend_conf"]["frontend_conf"]["upstream"] = "apc"  # an RNN upstream espzoo has no table entry for
    with pytest.raises(ModelConfigError, match=r"s3prl upstream .*could not be downloaded .*builds only") as err:
        build_model(config, device="meta")
    assert "\n" not in str(err.value) and no_network  # the download was attempted, and refused by the test


@pytest.mark.parametrize("upstream", ["xls_r_300m", "wav2vec2_large_960"])
def test_wav2vec2_class_upstreams_build_from_the_checkpoint(no_network: list, tmp_path: Path, upstream: str) -> None:
    """wav2vec 2.0 and XLS-R: the checkpoint's shapes (a quantizer, conv bias, the extractor's norm) win over the
    named size's, and every upstream weight is the checkpoint's after ESPnet's strict load."""
    folder = tmp_path / "pre"
    config = wavlm_config(folder)
    config["frontend_conf"]["frontend_conf"]["upstream"] = upstream
    torch.manual_seed(5)
    built = build_model(config, reference=tiny_xls_r_shapes())
    state = built.state_dict()
    assert state["frontend.upstream.upstream.model.quantizer.vars"].shape == (1, 16, 8)
    assert "frontend.upstream.upstream.model.feature_extractor.conv_layers.0.0.bias" in state
    torch.save(state, folder / "model.pth")
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    plan = plan_transfer(str(folder), TransferOptions(vocab=f"char:{ES_TEXT}"))
    assert all(r.action == "load" for r in plan.rows if r.target_key.startswith("frontend."))
    result = apply_plan(plan, tmp_path / "out")
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    model = build_model(yaml.safe_load(result.config.read_text()), reference=shapes)
    model.load_state_dict(torch.load(result.checkpoint, weights_only=True), strict=True)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items() if k.startswith("frontend."))
    encoded, _ = model.encode(torch.randn(1, 16000), torch.tensor([16000]))
    assert torch.isfinite(encoded).all() and no_network == []
