"""espzoo.models.build: ESPnet builds every test architecture from a config dict, on CPU and on the meta device."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from _models import ARCHITECTURES, EN_CHARS, FAMILIES, VOCAB_AXES, config_for, family_config

from espzoo.errors import MissingPackageError, ModelConfigError
from espzoo.models.build import build_model, describe_target, model_token_list, target_shapes, training_args


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_meta_shapes_are_the_cpu_models_and_cost_no_memory(name: str, tmp_path: Path) -> None:
    config = config_for(name, tmp_path)
    cpu = build_model(config)
    meta = build_model(config, device="meta")
    assert type(cpu).__name__ == "ESPnetASRModel"
    # Nearly nothing is allocated: only what ESPnet creates with legacy constructors that ignore the device
    # context (the rel-pos attention's pos_bias_u/v, heads x d_k each) lives on the CPU.
    allocated = sum(p.numel() for p in meta.parameters() if not p.is_meta)
    assert allocated <= 0.02 * sum(p.numel() for p in cpu.parameters())
    assert target_shapes(config) == {k: tuple(v.shape) for k, v in cpu.state_dict().items()}
    # Every architecture has the CTC output over the model's vocabulary.
    assert target_shapes(config)["ctc.ctc_lo.weight"][0] == len(model_token_list(config))


def test_config_overlays_espnet_parser_defaults(tmp_path: Path) -> None:
    config = config_for("conformer", tmp_path)
    args = training_args(config)
    assert args.encoder == "conformer" and args.encoder_conf == config["encoder_conf"]
    assert args.model == "espnet" and args.frontend == "default"  # defaults from ASRTask.get_parser()
    # A *_conf in the config replaces the parser's default dict, as `--config` does.
    args = training_args({**config, "ctc_conf": {"dropout_rate": 0.2}})
    assert args.ctc_conf == {"dropout_rate": 0.2}
    assert config["token_list"][0] == "<blank>"  # the caller's config is not mutated by a build
    build_model(config)
    assert "<blank2>" not in config["token_list"]


def test_multi_blank_transducer_token_list_is_the_models(tmp_path: Path) -> None:
    config = config_for("transducer", tmp_path)
    model = build_model(config, device="meta")
    assert model_token_list(config) == model.token_list
    assert model.token_list[:3] == ["<blank4>", "<blank2>", "<blank>"]
    assert describe_target(config).token_list == model.token_list
    assert "joint_network.lin_out.weight" in describe_target(config).parameters


def test_buffers_are_not_parameters(tmp_path: Path) -> None:
    target = describe_target(config_for("conformer", tmp_path))
    assert "normalize.mean" in target.shapes and "normalize.mean" not in target.parameters
    assert "encoder.embed.conv.0.weight" in target.parameters


def test_missing_stats_file_is_an_error_to_build_but_shapes_still_come(tmp_path: Path) -> None:
    config = config_for("conformer", tmp_path)
    config["normalize_conf"] = {"stats_file": str(tmp_path / "nowhere.npz")}
    with pytest.raises(ModelConfigError, match="stats_file"):
        build_model(config)
    shapes = target_shapes(config)
    assert shapes["normalize.mean"] == (20,) and shapes["normalize.std"] == (20,)  # the frontend's 20 mels


def test_unbuildable_configs_say_so(tmp_path: Path) -> None:
    config = config_for("conformer", tmp_path)
    with pytest.raises(ModelConfigError, match="token_list"):
        build_model({k: v for k, v in config.items() if k != "token_list"})
    with pytest.raises(ModelConfigError, match="no_such_option"):
        build_model({**config, "encoder_conf": {**config["encoder_conf"], "no_such_option": 1}}, device="meta")


@pytest.mark.parametrize("family", FAMILIES)
def test_vocabulary_tensors_are_found_from_the_model(family: str, tmp_path: Path) -> None:
    config = family_config(family, tmp_path)
    target = describe_target(config)
    assert target.vocab_axes == {k: axis for k, axis in VOCAB_AXES.items() if k in target.shapes}  # the oracle
    assert "ctc.ctc_lo.weight" in target.vocab_axes or "ctc_lin.weight" in target.vocab_axes
    assert target.token_list == build_model(config, device="meta").token_list
    if family == "pit_ctc":  # PIT-CTC's criterion holds the model's own CTC layer: one tensor, two names
        assert target.aliases == {"pit_ctc.criterion_fn.ctc_lo.weight": "ctc.ctc_lo.weight",
                                  "pit_ctc.criterion_fn.ctc_lo.bias": "ctc.ctc_lo.bias"}
    if family == "mask_ctc":  # the decoder has the <mask> row the model appends; CTC does not
        assert target.token_list[-1] == "<mask>" and model_token_list(config) == target.token_list
        assert target.shapes["decoder.output_layer.weight"][0] == target.shapes["ctc.ctc_lo.weight"][0] + 1
    if family == "self_conditioned_ctc":
        assert target.vocab_axes["encoder.conditioning_layer.weight"] == 1


def test_a_model_the_meta_device_cannot_build_is_built_on_the_cpu(tmp_path: Path) -> None:
    # torchaudio's HuBERT copies tensors while it is constructed: "Cannot copy out of meta tensor" on meta.
    config = config_for("conformer", tmp_path, frontend=None, normalize=None, input_size=1, encoder="torchaudiohubert")
    config["encoder_conf"] = {"finetuning": False}
    model = build_model(config, device="meta")
    assert not any(p.is_meta for p in model.parameters())
    assert describe_target(config).shapes["ctc.ctc_lo.weight"] == (len(EN_CHARS), 768)


def test_a_missing_optional_package_is_one_sentence_naming_it(tmp_path: Path) -> None:
    config = config_for("conformer", tmp_path, encoder="longformer")
    config["encoder_conf"] = {"output_size": 32}
    with pytest.raises(MissingPackageError) as err:
        build_model(config, device="meta")
    message = str(err.value)
    assert "longformer" in message and "pip install" in message and "\n" not in message
    assert isinstance(err.value, ModelConfigError)


def test_a_standard_transducer_trains_with_torchaudios_rnnt_loss(tmp_path: Path) -> None:
    """ESPnet imports warprnnt_pytorch (no wheel) for single-blank transducers; torchaudio's loss stands in."""
    import torch

    config = family_config("transducer", tmp_path)
    torch.manual_seed(0)
    model = build_model(config)
    assert type(model.criterion_transducer).__qualname__.endswith("RNNTLoss")
    assert sys.modules["warprnnt_pytorch"].__espzoo_stand_in__ == "torchaudio.functional.rnnt_loss"
    speech = torch.randn(2, 8000)
    text = torch.tensor([[4, 5, 6], [7, 8, 0]])
    loss, stats, _ = model(speech, torch.tensor([8000, 6000]), text, torch.tensor([3, 2]))
    loss.backward()
    assert torch.isfinite(loss) and stats["loss_transducer"] > 0
    assert model.joint_network.lin_out.weight.grad.abs().sum() > 0
