"""s3prl upstreams (WavLM, HuBERT, wav2vec 2.0, XLS-R) built from their architecture, random weights, never downloaded.

s3prl's hub entries turn a checkpoint URL into a local path (`_urls_to_filepaths`, which downloads) and the
expert then reads `{cfg, model}` (WavLM) or `{task_cfg, model_cfg, model_weight, dictionaries_symbols}`
(HuBERT) from it with `torch.load`. While an ESPnet model is being built, espzoo answers both steps itself for
the upstreams it knows: the path is a placeholder, and loading it gives the published configuration with every
dimension the checkpoint about to be loaded shows (layers, widths, feature-extractor channels and kernels,
WavLM's head count), and the weights of a freshly built model of that configuration. Flags that no shape shows
(`layer_norm_first`, `normalize`, strides) come from the named upstream's published configuration below.
An upstream not in the table is left to s3prl (it downloads, as in ESPnet).
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from espzoo.errors import UpstreamUnavailableError

Shapes = Mapping[str, tuple[int, ...]]

_STRIDES = (5, 2, 2, 2, 2, 2, 2)  # the wav2vec 2.0 feature extractor's, shared by WavLM and HuBERT
_CONV = "[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2"
_BASE = {"extractor_mode": "default", "encoder_layers": 12, "encoder_embed_dim": 768, "encoder_ffn_embed_dim": 3072,
         "encoder_attention_heads": 12, "layer_norm_first": False, "conv_feature_layers": _CONV, "conv_bias": False}
_LARGE = {**_BASE, "extractor_mode": "layer_norm", "encoder_layers": 24, "encoder_embed_dim": 1024,
          "encoder_ffn_embed_dim": 4096, "encoder_attention_heads": 16, "layer_norm_first": True}

_W2V = {"quantize_targets": True, "latent_vars": 320, "latent_groups": 2}  # pretrained with a quantizer
# Checkpoint file name (the last part of s3prl's URL) -> (family, published configuration, task normalize).
ARCHITECTURES: dict[str, tuple[str, dict[str, Any], bool]] = {
    "wavlm_base.pt": ("wavlm", {**_BASE, "relative_position_embedding": True, "num_buckets": 320,
                                "max_distance": 800, "gru_rel_pos": True}, False),
    "wavlm_base_plus.pt": ("wavlm", {**_BASE, "relative_position_embedding": True, "num_buckets": 320,
                                     "max_distance": 800, "gru_rel_pos": True}, False),
    "wavlm_large.pt": ("wavlm", {**_LARGE, "relative_position_embedding": True, "num_buckets": 320,
                                 "max_distance": 800, "gru_rel_pos": True}, True),
    "hubert_base_ls960.pt": ("hubert", {**_BASE, "final_dim": 256, "label_rate": 50.0}, False),
    "hubert_large_ll60k.pt": ("hubert", {**_LARGE, "final_dim": 768, "label_rate": 50.0}, True),
    # wav2vec 2.0 and XLS-R (s3prl's converted checkpoints; fairseq's published configurations)
    "wav2vec_small.pt": ("wav2vec2", {**_W2V, "final_dim": 256}, False),
    "libri960_big.pt": ("wav2vec2", {**_LARGE, **_W2V, "extractor_mode": "default", "layer_norm_first": False,
                                     "final_dim": 768}, False),
    "wav2vec_vox_new.pt": ("wav2vec2", {**_LARGE, **_W2V, "conv_bias": True, "final_dim": 768}, True),
    "w2v_large_lv_fsh_swbd_cv.pt": ("wav2vec2", {**_LARGE, **_W2V, "conv_bias": True, "final_dim": 768}, True),
    "xlsr_53_56k.pt": ("wav2vec2", {**_LARGE, **_W2V, "conv_bias": True, "final_dim": 768}, True),
    "xlsr2_300m.pt": ("wav2vec2", {**_LARGE, **_W2V, "conv_bias": True, "final_dim": 768}, True),
    "xlsr2_960m_1000k.pt": ("wav2vec2", {**_LARGE, **_W2V, "conv_bias": True, "encoder_layers": 48,
                                         "encoder_embed_dim": 1280, "encoder_ffn_embed_dim": 5120,
                                         "final_dim": 1024}, True),
    "xlsr2_2B_1000k.pt": ("wav2vec2", {**_LARGE, **_W2V, "conv_bias": True, "encoder_layers": 48,
                                       "encoder_embed_dim": 1920, "encoder_ffn_embed_dim": 7680,
                                       "final_dim": 1024}, True),
}
_HUBERT_CLASSES = {"hubert_base_ls960.pt": 504, "hubert_large_ll60k.pt": 500}


def offline_hub_patches(shapes: Shapes) -> list[tuple[Any, str, Any]]:
    """(object, attribute, replacement) pairs that make s3prl build known upstreams without downloading.

    One set of patches serves one model build (the n-th upstream requested gets the checkpoint's n-th upstream).
    """
    import torch
    from s3prl.upstream.hubert import convert as hubert_convert
    from s3prl.upstream.hubert import hubconf as hubert_hubconf
    from s3prl.upstream.wavlm import hubconf as wavlm_hubconf

    folder = Path(tempfile.gettempdir()) / "espzoo-s3prl-placeholders"
    pending: dict[str, Callable[[], dict[str, Any]]] = {}
    original_paths = wavlm_hubconf._urls_to_filepaths
    original_load = torch.load
    # A fused front end builds several upstreams, in the order of its list, which is their order in the state
    # dict: the n-th upstream built gets the n-th upstream's shapes of the checkpoint.
    parts = [{k: v for k, v in shapes.items() if k.startswith(prefix)} for prefix in _prefixes(shapes)]
    built = 0

    def urls_to_filepaths(*urls: str, refresh: bool = False, download: bool = True) -> Any:
        paths = []
        for url in urls:
            name = Path(url).name
            if name not in ARCHITECTURES:
                paths.append(_download(original_paths, url, refresh, download))
                continue
            nonlocal built
            part = parts[built] if built < len(parts) else {}
            built += 1
            placeholder = folder / str(built) / name  # an empty file: s3prl's *_local entries check it exists
            placeholder.parent.mkdir(parents=True, exist_ok=True)
            placeholder.touch()
            pending[str(placeholder)] = lambda name=name, part=part: upstream_checkpoint(name, part)
            paths.append(str(placeholder))
        return paths if len(paths) > 1 else paths[0]

    def load(f: Any, *args: Any, **kwargs: Any) -> Any:
        build = pending.get(str(f)) if isinstance(f, str | Path) else None
        return build() if build else original_load(f, *args, **kwargs)

    modules = {id(m): m for m in (wavlm_hubconf, hubert_hubconf, *_other_hubconfs())}.values()
    return [
        *((module, "_urls_to_filepaths", urls_to_filepaths) for module in modules),
        (hubert_convert.torch, "load", load),  # the torch module itself: WavLM's expert calls torch.load too
    ]


def _download(original: Callable[..., Any], url: str, refresh: bool, download: bool) -> Any:
    try:
        return original(url, refresh=refresh, download=download)
    except Exception as err:  # noqa: BLE001 (s3prl's downloader fails in many ways: requests, OSError, asserts)
        known = ", ".join(sorted(Path(n).stem for n in ARCHITECTURES))
        raise UpstreamUnavailableError(
            f"The s3prl upstream {Path(url).name} could not be downloaded ({type(err).__name__}), and espzoo builds "
            f"only {known} from their architecture; put the file in s3prl's download folder or use a network."
        ) from err


def _other_hubconfs() -> list[Any]:
    """Every other s3prl hub module that resolves URLs through `_urls_to_filepaths` (wav2vec 2.0, XLS-R, APC, ...):
    s3prl's hub imports them all, and each holds its own reference to the downloader."""
    import sys

    try:
        pass
    except Exception:  # noqa: BLE001, S110 (an upstream whose own optional imports are missing: not ours)
        pass
    return [module for name, module in list(sys.modules.items())
            if name.startswith("s3prl.upstream.") and name.endswith(".hubconf")
            and hasattr(module, "_urls_to_filepaths")]


def upstream_checkpoint(name: str, shapes: Shapes) -> dict[str, Any]:
    """What s3prl's expert reads from upstream `name`'s checkpoint, with random weights of the right shapes."""
    family, cfg, normalize = ARCHITECTURES[name]
    cfg = {**cfg, **_dimensions(shapes, cfg)}
    if family == "wavlm":
        from s3prl.upstream.wavlm.WavLM import WavLM, WavLMConfig

        cfg["normalize"] = normalize
        return {"cfg": cfg, "model": WavLM(WavLMConfig(cfg)).state_dict()}
    if family == "wav2vec2":
        return _wav2vec2_checkpoint(cfg, normalize, shapes)
    from s3prl.upstream.hubert.hubert_model import HubertConfig, HubertModel, HubertPretrainingConfig

    prefix = _prefix(shapes)
    classes = shapes.get(f"{prefix}label_embs_concat", (_HUBERT_CLASSES[name],))[0]
    if f"{prefix}final_proj.weight" in shapes:
        cfg["final_dim"] = shapes[f"{prefix}final_proj.weight"][0]
    task_cfg = {"normalize": normalize, "sample_rate": 16000, "label_rate": 50}
    symbols = [[str(i) for i in range(classes)]]
    model_cfg = HubertConfig(**{k: v for k, v in cfg.items() if k in HubertConfig.__dataclass_fields__})
    model = HubertModel(model_cfg, HubertPretrainingConfig(**task_cfg), symbols)
    return {"task_cfg": task_cfg, "model_cfg": cfg, "model_weight": model.state_dict(), "dictionaries_symbols": symbols}


def _wav2vec2_checkpoint(cfg: dict[str, Any], normalize: bool, shapes: Shapes) -> dict[str, Any]:
    """s3prl's converted wav2vec 2.0 checkpoint: {task_cfg, model_cfg, model_weight} (wav2vec2/convert.py)."""
    from s3prl.upstream.wav2vec2.wav2vec2_model import Wav2Vec2Config, Wav2Vec2Model

    prefix = _prefix(shapes)
    if prefix is not None:
        final = shapes.get(f"{prefix}final_proj.weight")
        if final is not None:
            cfg["final_dim"] = final[0]
        codebook = shapes.get(f"{prefix}quantizer.vars")  # (1, groups * vars, codevector dim / groups)
        cfg["quantize_targets"] = codebook is not None
        if codebook is not None:
            cfg["latent_vars"] = codebook[1] // cfg["latent_groups"]
            cfg["latent_dim"] = codebook[2] * cfg["latent_groups"]
    model_cfg = {k: v for k, v in cfg.items() if k in Wav2Vec2Config.__dataclass_fields__}
    model = Wav2Vec2Model(Wav2Vec2Config(**model_cfg))
    task_cfg = {"normalize": normalize, "sample_rate": 16000}
    return {"task_cfg": task_cfg, "model_cfg": model_cfg, "model_weight": model.state_dict()}


_FIRST_CONV = "feature_extractor.conv_layers.0.0.weight"


def _prefixes(shapes: Shapes) -> list[str]:
    """The key prefix of every upstream model in the checkpoint, in state-dict order."""
    return [key[: -len(_FIRST_CONV)] for key in shapes if key.endswith(_FIRST_CONV)]


def _prefix(shapes: Shapes) -> str | None:
    return next(iter(_prefixes(shapes)), None)


def _dimensions(shapes: Shapes, cfg: dict[str, Any]) -> dict[str, Any]:
    """The configuration values the checkpoint's shapes show (none without a checkpoint)."""
    prefix = _prefix(shapes)
    if prefix is None:
        return {}
    out: dict[str, Any] = {}
    layers = {int(m.group(1)) for k in shapes if (m := re.match(re.escape(prefix) + r"encoder\.layers\.(\d+)\.", k))}
    if layers:
        out["encoder_layers"] = max(layers) + 1
    layer = f"{prefix}encoder.layers.0."
    if f"{layer}self_attn.k_proj.weight" in shapes:
        out["encoder_embed_dim"] = shapes[f"{layer}self_attn.k_proj.weight"][0]
    if f"{layer}fc1.weight" in shapes:
        out["encoder_ffn_embed_dim"] = shapes[f"{layer}fc1.weight"][0]
    if f"{layer}self_attn.relative_attention_bias.weight" in shapes:  # WavLM: (buckets, heads)
        out["num_buckets"], out["encoder_attention_heads"] = shapes[f"{layer}self_attn.relative_attention_bias.weight"]
    convs = []
    for i, stride in enumerate(_STRIDES):
        weight = shapes.get(f"{prefix}feature_extractor.conv_layers.{i}.0.weight")
        if weight is None:
            break
        convs.append((weight[0], weight[2], stride))
    if convs:
        out["conv_feature_layers"] = repr(convs)
        first = f"{prefix}feature_extractor.conv_layers.0."
        out["conv_bias"] = f"{first}0.bias" in shapes
        # the first conv block's norm: a GroupNorm ("default" mode) or a LayerNorm in a Sequential ("layer_norm")
        if f"{first}2.weight" in shapes or f"{first}2.1.weight" in shapes:
            out["extractor_mode"] = "default" if f"{first}2.weight" in shapes else "layer_norm"
    pos = next((v for k, v in shapes.items() if k.startswith(f"{prefix}encoder.pos_conv.0.") and len(v) == 3
                and k.endswith(("weight_v", "original1"))), None)
    if pos is not None:  # (embed, embed / groups, kernel)
        out["conv_pos"], out["conv_pos_groups"] = pos[2], pos[0] // pos[1]
    return out
