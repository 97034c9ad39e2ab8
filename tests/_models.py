"""Pretrained models for the model/transfer tests: built by ESPnet from tests/configs/*.yaml, saved as
experiment dirs (config.yaml with paths relative to the folder, model.pth, feats_stats.npz), as espzoo's
trainer writes them. Weights are ESPnet's seeded initialization: real parameter names and shapes, no training."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import yaml

CONFIGS = Path(__file__).resolve().parent / "configs"
ARCHITECTURES = ("conformer", "transformer", "e_branchformer", "rnn", "transducer")
EN_CHARS = ["<blank>", "<unk>", "<space>", *"etaoinshrdlucmwfgypbvkxjqz'", "<sos/eos>"]


def write_stats(path: Path, dims: int = 20, seed: int = 0) -> Path:
    """feats_stats.npz as ESPnet's collect_stats writes it (count, sum, sum_square)."""
    rng = np.random.default_rng(seed)
    count = 500
    mean = rng.normal(-4.0, 1.0, dims)
    var = rng.uniform(1.0, 4.0, dims)
    np.savez(path, count=np.array(count), sum=mean * count, sum_square=(var + mean**2) * count)
    return path


def config_for(name: str, folder: Path, tokens: list[str] | None = None, **overrides: Any) -> dict[str, Any]:
    """tests/configs/NAME.yaml with a token list and a stats file in `folder` (absolute paths)."""
    config = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())
    folder.mkdir(parents=True, exist_ok=True)
    stats = folder / "feats_stats.npz"
    if not stats.exists():
        write_stats(stats)
    config.update(token_list=list(tokens or EN_CHARS), token_type="char", bpemodel=None)
    config["normalize_conf"] = {"stats_file": str(stats)}
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    return config


def make_experiment(
    folder: Path, name: str, *, seed: int = 1, tokens: list[str] | None = None, family: str | None = None,
    **overrides: Any,
) -> Path:
    """An experiment dir holding an ESPnet-built model of architecture `name` (or of FAMILIES[family]); returns
    the folder."""
    import torch

    from espzoo.model import build_model

    config = family_config(family, folder, tokens) if family else config_for(name, folder, tokens, **overrides)
    torch.manual_seed(seed)
    model = build_model(config)
    torch.save(model.state_dict(), folder / "model.pth")
    on_disk = dict(config, normalize_conf={"stats_file": "feats_stats.npz"})  # relative, as in OUT/config.yaml
    (folder / "config.yaml").write_text(yaml.safe_dump(on_disk, allow_unicode=True, sort_keys=False))
    return folder


def espnet_model(config: dict[str, Any], seed: int) -> Any:
    """The target model as ESPnet builds it, with a seeded initialization."""
    import torch

    from espzoo.model import build_model

    torch.manual_seed(seed)
    return build_model(config).eval()


# The test oracle: the vocabulary-sized tensors of ESPnet ASR models as known by name, with the token axis.
# espzoo finds them from the built model (espzoo.model.vocabulary_axes); the tests check it finds these.
VOCAB_AXES: dict[str, int] = {
    "ctc.ctc_lo.weight": 0,
    "ctc.ctc_lo.bias": 0,
    "pit_ctc.criterion_fn.ctc_lo.weight": 0,  # multi-speaker PIT-CTC: the same module as ctc.ctc_lo
    "pit_ctc.criterion_fn.ctc_lo.bias": 0,
    "decoder.embed.0.weight": 0,  # transformer-family decoders
    "decoder.output_layer.weight": 0,
    "decoder.output_layer.bias": 0,
    "decoder.embed.weight": 0,  # RNN and transducer decoders
    "decoder.output.weight": 0,
    "decoder.output.bias": 0,
    "joint_network.lin_out.weight": 0,  # transducer joint network
    "joint_network.lin_out.bias": 0,
    "encoder.conditioning_layer.weight": 1,  # self-conditioned CTC feeds posteriors back: Linear(vocab, d)
    "ctc_lin.weight": 0,  # asr_transducer task: auxiliary CTC and LM outputs
    "ctc_lin.bias": 0,
    "lm_lin.weight": 0,
    "lm_lin.bias": 0,
    "embed.weight": 0,  # OWSM-CTC's prompt embedding (espnet2/s2t/espnet_ctc_model.py)
}

_CONFORMER = {"output_size": 32, "attention_heads": 2, "linear_units": 64, "num_blocks": 2, "input_layer": "conv2d"}
_SMALL_DECODER = {"attention_heads": 2, "linear_units": 64, "num_blocks": 1}

# One small config per model family: (tests/configs base, overrides). Built by ESPnet in the generality test.
FAMILIES: dict[str, tuple[str, dict[str, Any]]] = {
    "conformer": ("conformer", {}),
    "e_branchformer": ("e_branchformer", {}),
    "branchformer": ("conformer", {"encoder": "branchformer", "encoder_conf": {
        "output_size": 32, "attention_heads": 2, "num_blocks": 2, "cgmlp_linear_units": 64, "cgmlp_conv_kernel": 7,
        "input_layer": "conv2d"}}),
    "transformer": ("transformer", {}),
    "rnn": ("rnn", {}),
    "contextual_block": ("conformer", {"encoder": "contextual_block_conformer", "encoder_conf": {
        **_CONFORMER, "block_size": 8, "hop_size": 4, "look_ahead": 4}}),
    "transducer": ("transducer", {"model_conf": {"transducer_multi_blank_durations": [],
                                                  "transducer_multi_blank_sigma": 0.0}}),
    "multi_blank": ("transducer", {}),
    "ctc_only": ("conformer", {"decoder": None, "decoder_conf": {}, "model_conf": {"ctc_weight": 1.0}}),
    "self_conditioned_ctc": ("conformer", {
        "decoder": None, "decoder_conf": {}, "model_conf": {"ctc_weight": 1.0},
        "encoder_conf": {"interctc_layer_idx": [1], "interctc_use_conditioning": True}}),
    "mask_ctc": ("conformer", {"model": "maskctc", "decoder": "mlm", "decoder_conf": _SMALL_DECODER}),
    "pit_ctc": ("conformer", {"model": "pit_espnet", "decoder": None, "decoder_conf": {},
                              "model_conf": {"ctc_weight": 1.0, "num_inf": 2, "num_ref": 2}}),
    "asr_transducer": ("asr_transducer", {}),
    "fused_frontend": ("conformer", {"frontend": "fused", "normalize": None, "frontend_conf": {
        "align_method": "linear_projection", "proj_dim": 20, "frontends": [
            {"frontend_type": "default", "n_fft": 512, "win_length": 400, "hop_length": 160, "n_mels": 20},
            {"frontend_type": "default", "n_fft": 400, "win_length": 400, "hop_length": 160, "n_mels": 16}]}}),
}


def family_config(family: str, folder: Path, tokens: list[str] | None = None) -> dict[str, Any]:
    """The small config of `family` (see FAMILIES), with a token list and a stats file in `folder`."""
    base, overrides = FAMILIES[family]
    config = config_for(base, folder, tokens)
    for key, value in overrides.items():
        merge = isinstance(value, dict) and value and isinstance(config.get(key), dict)
        if (key == "encoder_conf" and "encoder" in overrides) or (key == "frontend_conf" and "frontend" in overrides):
            # another encoder or front end: its own options only
            merge = False
        config[key] = {**config[key], **value} if merge else value
    return config
