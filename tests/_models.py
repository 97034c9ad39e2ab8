"""Pretrained models for the model/transfer tests: built by ESPnet from tests/configs/*.yaml, saved as
experiment dirs (config.yaml with paths relative to the folder, model.pth, feats_stats.npz), as espzoo's
trainer writes them. Weights are ESPnet's seeded initialization: real parameter names and shapes, no training."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from espzoo.models.build import build_model

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

    from espzoo.models.build import build_model

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

    from espzoo.models.build import build_model

    torch.manual_seed(seed)
    return build_model(config).eval()


# The test oracle: the vocabulary-sized tensors of ESPnet ASR models as known by name, with the token axis.
# espzoo finds them from the built model (espzoo.models.build.vocabulary_axes); the tests check it finds these.
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


def whisper_config(folder: Path, tokens: list[str] | None = None) -> dict[str, Any]:
    config = config_for("conformer", folder, tokens, frontend=None, normalize=None, specaug=None, input_size=1,
                        encoder="whisper", decoder="whisper", token_type="whisper_multilingual")
    config["encoder_conf"] = {"whisper_model": "tiny", "dropout_rate": 0.0}
    config["decoder_conf"] = {"whisper_model": "tiny", "dropout_rate": 0.0}
    config["bpemodel"] = "whisper_multilingual"  # ESPnet's Whisper tokenizer takes its model type from here
    config["normalize_conf"] = {}
    config["model_conf"] = {"ctc_weight": 0.3, "sym_sos": "<sos/eos>", "sym_eos": "<sos/eos>"}
    return config


def tiny_whisper_shapes(vocab: int) -> dict[str, tuple[int, ...]]:
    """A Whisper of the `tiny` class (6 heads) at 1/8 of its width and half its depth."""
    from whisper.model import ModelDimensions, Whisper

    dims = ModelDimensions(n_mels=80, n_audio_ctx=1500, n_audio_state=48, n_audio_head=6, n_audio_layer=2,
                           n_vocab=vocab, n_text_ctx=448, n_text_state=48, n_text_head=6, n_text_layer=2)
    model = Whisper(dims)  # small; Whisper itself cannot be built on the meta device (a sparse buffer)
    return {f"encoder.encoders.{k[len('encoder.'):]}" if k.startswith("encoder.") else
            f"decoder.decoders.{k[len('decoder.'):]}": tuple(v.shape) for k, v in model.state_dict().items()}


def wavlm_config(folder: Path) -> dict[str, Any]:
    config = config_for("conformer", folder, frontend="s3prl", normalize=None, specaug=None, preencoder="linear")
    config["frontend_conf"] = {"frontend_conf": {"upstream": "wavlm_large"}, "multilayer_feature": True}
    config["preencoder_conf"] = {"input_size": 48, "output_size": 20}
    config["normalize_conf"] = {}
    return config


def tiny_hubert_shapes() -> dict[str, tuple[int, ...]]:
    """A HuBERT of the hubert_base class (12 heads) with 2 layers, 48 wide, 32 conv channels, 10 classes."""
    from s3prl.upstream.hubert.hubert_model import HubertConfig, HubertModel, HubertPretrainingConfig

    from espzoo.models.s3prl import ARCHITECTURES

    cfg = dict(ARCHITECTURES["hubert_base_ls960.pt"][1], encoder_layers=2, encoder_embed_dim=48,
               encoder_ffn_embed_dim=64, final_dim=16, conv_pos=16, conv_pos_groups=4,
               conv_feature_layers="[(32,10,5)] + [(32,3,2)] * 4 + [(32,2,2)] * 2")
    model = HubertModel(HubertConfig(**cfg), HubertPretrainingConfig(), [list("abcdefghij")])
    return {f"frontend.upstream.upstream.model.{k}": tuple(v.shape) for k, v in model.state_dict().items()}


def tiny_wavlm_shapes() -> dict[str, tuple[int, ...]]:
    """A WavLM of the wavlm_large class (layer-norm first, 16 heads) with 2 layers, 48 wide, 32 conv channels."""
    from s3prl.upstream.wavlm.WavLM import WavLM, WavLMConfig

    from espzoo.models.s3prl import ARCHITECTURES

    cfg = dict(ARCHITECTURES["wavlm_large.pt"][1], encoder_layers=2, encoder_embed_dim=48, encoder_ffn_embed_dim=64,
               conv_feature_layers="[(32,10,5)] + [(32,3,2)] * 4 + [(32,2,2)] * 2", conv_pos=16, conv_pos_groups=4)
    model = WavLM(WavLMConfig(cfg))  # small; its weight-normed positional conv cannot be built on the meta device
    return {f"frontend.upstream.upstream.model.{k}": tuple(v.shape) for k, v in model.state_dict().items()}


def tiny_xls_r_shapes() -> dict[str, tuple[int, ...]]:
    """A wav2vec 2.0 of the XLS-R class (layer-norm extractor with conv bias, a quantizer) with 2 layers, 48 wide,
    32 conv channels, a 2 x 8-entry codebook."""
    from s3prl.upstream.wav2vec2.wav2vec2_model import Wav2Vec2Config, Wav2Vec2Model

    from espzoo.models.s3prl import ARCHITECTURES

    cfg = dict(ARCHITECTURES["xlsr2_300m.pt"][1], encoder_layers=2, encoder_embed_dim=48, encoder_ffn_embed_dim=64,
               final_dim=16, latent_vars=8, conv_pos=16, conv_pos_groups=4,
               conv_feature_layers="[(32,10,5)] + [(32,3,2)] * 4 + [(32,2,2)] * 2")
    model = Wav2Vec2Model(Wav2Vec2Config(**{k: v for k, v in cfg.items() if k in Wav2Vec2Config.__dataclass_fields__}))
    return {f"frontend.upstream.upstream.model.{k}": tuple(v.shape) for k, v in model.state_dict().items()}


def family_experiment(family: str, folder: Path) -> Path:
    reference = None
    if family == "whisper":  # a Whisper encoder with ESPnet's transformer decoder and its own (char) tokens
        config = whisper_config(folder)
        config.update(decoder="transformer", token_type="char",
                      decoder_conf={"attention_heads": 2, "linear_units": 64, "num_blocks": 1})
        reference = tiny_whisper_shapes(51865)
        reference = {k: v for k, v in reference.items() if k.startswith("encoder.")}
    elif family.startswith("s3prl_"):
        config = wavlm_config(folder)
        upstream, shapes = {"s3prl_wavlm": ("wavlm_large", tiny_wavlm_shapes),
                            "s3prl_hubert": ("hubert_base", tiny_hubert_shapes),
                            "s3prl_xls_r": ("xls_r_300m", tiny_xls_r_shapes)}[family]
        config["frontend_conf"]["frontend_conf"]["upstream"] = upstream
        reference = shapes()
    else:
        config = family_config(family, folder)
    torch.manual_seed(1)
    model = build_model(config, reference=reference)
    torch.save(model.state_dict(), folder / "model.pth")
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return folder
