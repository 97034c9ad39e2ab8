"""Building ESPnet models whose parts wrap other toolkits, offline, and the small gaps between versions.

ESPnet's Whisper encoder, decoder and front end call `whisper.load_model(name)` and its SSL front end calls
s3prl's hub, both of which download the upstream weights while the model is being built, although the
checkpoint about to be loaded into it holds every one of those weights. `offline_upstreams()` builds those
upstreams from their architecture with random weights instead (Whisper's `ModelDimensions` for the named
size; the dimensions a checkpoint shows win over the table, so a checkpoint of any width builds), and never
downloads.

Bridges, each in this one place:
- ESPnet 202511's Whisper encoder imports `whisper.audio.N_MELS`, which openai-whisper dropped in 20231117
  (the mel count became a model dimension); 80 is the value it had, the one ESPnet's encoder computes with.
- ESPnet builds standard (single-blank) transducers with `from warprnnt_pytorch import RNNTLoss`, a package
  with no wheel on PyPI; when it is absent, that import gets torchaudio's RNN-T loss (same call, same 'mean').
- ESPnet's CTC module imports k2 while being built with Bayes-risk CTC (`ctc_conf: {ctc_type: brctc}`), although
  only the training loss uses it: the parameters and the decoding are plain CTC's. When k2 is absent (its PyPI
  wheels predate torch 2.11), a stand-in lets such a model build (plan, decode, export); any use of it, and a
  training run (`training_gap`), is one sentence naming k2.

A Hugging Face post-encoder (`postencoder: hugging_face_transformers`) is built from the named model's config.json
(taken from the Hugging Face cache when offline; a few KB) with random weights, never its weights, which the
checkpoint holds; without that config.json it is one sentence saying how to fetch it.
"""

from __future__ import annotations

import contextlib
import re
import sys
import types
from collections.abc import Iterator, Mapping
from typing import Any

# openai-whisper's released sizes: (audio state, audio heads, audio layers, text state, text heads, text layers,
# mels, vocabulary), from the published checkpoints' `dims`; both contexts are 1500 audio frames, 448 tokens.
WHISPER_SIZES: dict[str, tuple[int, int, int, int, int, int, int, int]] = {
    "tiny": (384, 6, 4, 384, 6, 4, 80, 51865),
    "base": (512, 8, 6, 512, 8, 6, 80, 51865),
    "small": (768, 12, 12, 768, 12, 12, 80, 51865),
    "medium": (1024, 16, 24, 1024, 16, 24, 80, 51865),
    "large-v1": (1280, 20, 32, 1280, 20, 32, 80, 51865),
    "large-v2": (1280, 20, 32, 1280, 20, 32, 80, 51865),
    "large-v3": (1280, 20, 32, 1280, 20, 32, 128, 51866),
    "large-v3-turbo": (1280, 20, 32, 1280, 20, 4, 128, 51866),
}
WHISPER_ALIASES = {"large": "large-v3", "turbo": "large-v3-turbo"}
WHISPER_N_MELS = 80  # whisper.audio.N_MELS before 20231117

Shapes = Mapping[str, tuple[int, ...]]


def install_bridges() -> None:
    """Fill the version gaps described above (idempotent, and only where the real thing is missing)."""
    try:
        import whisper.audio
    except ImportError:
        pass
    else:
        if not hasattr(whisper.audio, "N_MELS"):
            whisper.audio.N_MELS = WHISPER_N_MELS
    if "warprnnt_pytorch" not in sys.modules:
        try:
            import warprnnt_pytorch  # noqa: F401 (only whether it imports)
        except ImportError:
            sys.modules["warprnnt_pytorch"] = _warprnnt_stand_in()
    if "k2" not in sys.modules and not _importable("k2"):
        sys.modules["_k2"], sys.modules["k2"] = _k2_stand_in("_k2"), _k2_stand_in("k2")


class _K2StandIn(types.ModuleType):
    """Importable; any attribute of k2's own is the sentence that k2 is missing (dunders stay AttributeErrors,
    so that introspection works)."""

    __espzoo_stand_in__ = "k2 is not installed"

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        from espzoo.errors import MissingPackageError
        pass

        raise MissingPackageError(missing_package_message("k2"))


def _k2_stand_in(name: str) -> types.ModuleType:
    import importlib.machinery

    module = _K2StandIn(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None)
    return module


def training_gap(config: Mapping[str, Any]) -> str | None:
    """Why the model of `config` builds here but cannot train (a stand-in above takes a package's place), or None."""
    brctc = (config.get("ctc_conf") or {}).get("ctc_type") == "brctc"
    if brctc and isinstance(sys.modules.get("k2"), _K2StandIn):
        return ("This model trains with Bayes-risk CTC (ctc_conf.ctc_type: brctc), whose loss needs the package k2, "
                "which is not installed; install a k2 built for the installed torch (planning and decoding work "
                "without it).")
    return None


def _warprnnt_stand_in() -> types.ModuleType:
    import torch

    class RNNTLoss(torch.nn.Module):
        """warprnnt_pytorch.RNNTLoss's interface over torchaudio.functional.rnnt_loss (log-softmax inside too)."""

        def __init__(self, blank: int = 0, fastemit_lambda: float = 0.0, reduction: str = "mean") -> None:
            super().__init__()
            if fastemit_lambda:
                raise ValueError(
                    "FastEmit (fastemit_lambda != 0) needs the warprnnt_pytorch package; torchaudio's RNN-T loss, "
                    "which espzoo uses without it, has no FastEmit: set fastemit_lambda to 0."
                )
            self.blank, self.reduction = blank, reduction

        def forward(self, acts: Any, labels: Any, act_lens: Any, label_lens: Any) -> Any:
            from torchaudio.functional import rnnt_loss

            return rnnt_loss(
                acts.float(),
                labels.int(),
                act_lens.int(),
                label_lens.int(),
                blank=self.blank,
                reduction=self.reduction,
            )

    module = types.ModuleType("warprnnt_pytorch")
    module.RNNTLoss = RNNTLoss  # type: ignore[attr-defined]
    module.__espzoo_stand_in__ = "torchaudio.functional.rnnt_loss"  # type: ignore[attr-defined]
    return module


def upstreams_in(config: Mapping[str, Any]) -> frozenset[str]:
    """Which upstream toolkits ("s3prl", "whisper") the model of an ESPnet training config builds on."""
    used = set()
    frontends = [config.get("frontend"), *((config.get("frontend_conf") or {}).get("frontends") or [])]
    if any(f == "s3prl" or (isinstance(f, dict) and f.get("frontend_type") == "s3prl") for f in frontends):
        used.add("s3prl")
    if "whisper" in (config.get("encoder"), config.get("decoder"), config.get("frontend")):
        used.add("whisper")
    if config.get("postencoder") == "hugging_face_transformers":
        used.add("transformers")
    return frozenset(used)


def upstream_modules(config: Mapping[str, Any]) -> dict[str, str]:
    """Module path -> what it is, for the upstream modules (built at random here) of the config's model."""
    modules = {}
    if config.get("frontend") == "s3prl":
        modules["frontend.upstream"] = "s3prl upstream"
    if config.get("frontend") == "whisper":  # espnet2/asr/frontend/whisper.py: the whole model, encoder used
        modules["frontend.whisper.encoder"] = "Whisper front end"
    if config.get("encoder") == "whisper":
        modules["encoder.encoders"] = "Whisper encoder"
    if config.get("decoder") == "whisper":
        modules["decoder.decoders"] = "Whisper decoder"
    return modules


@contextlib.contextmanager
def offline_upstreams(shapes: Shapes | None = None, uses: frozenset[str] | None = None) -> Iterator[None]:
    """While building: Whisper and s3prl upstreams come from their architecture (random weights), no download.

    `shapes` (a checkpoint's tensor shapes) gives the dimensions the built model must have; without it the
    named size's published dimensions are used. `uses` (see `upstreams_in`) limits the work to the toolkits the
    model needs; None means every installed one.
    """
    install_bridges()
    patches: list[tuple[Any, str, Any]] = []
    if (uses is None or "whisper" in uses) and ("whisper" in sys.modules or _importable("whisper")):
        import whisper

        patches.append((whisper, "load_model", _whisper_builder(shapes or {})))
    if (uses is None or "s3prl" in uses) and ("s3prl" in sys.modules or _importable("s3prl")):
        from espzoo.models.s3prl import offline_hub_patches

        patches += offline_hub_patches(shapes or {})
    if uses is not None and "transformers" in uses:
        from espnet2.asr.postencoder import hugging_face_transformers_postencoder as postencoder

        patches.append((postencoder, "AutoModel", _FromConfigOnly))
    saved = [(obj, name, getattr(obj, name)) for obj, name, _ in patches]
    try:
        for obj, name, value in patches:
            setattr(obj, name, value)
        yield
    finally:
        for obj, name, value in reversed(saved):
            setattr(obj, name, value)


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def whisper_dimensions(name: str, shapes: Shapes) -> dict[str, int]:
    """Whisper's ModelDimensions for size `name`, with every dimension the checkpoint `shapes` shows."""
    size = WHISPER_ALIASES.get(name, name.removesuffix(".en"))
    if size not in WHISPER_SIZES:
        raise ValueError(f"Whisper size {name!r} is not one espzoo knows ({', '.join(WHISPER_SIZES)}).")
    a_state, a_head, a_layer, t_state, t_head, t_layer, mels, vocab = WHISPER_SIZES[size]
    dims = {
        "n_mels": mels,
        "n_audio_ctx": 1500,
        "n_audio_state": a_state,
        "n_audio_head": a_head,
        "n_audio_layer": a_layer,
        "n_vocab": vocab - 1 if name.endswith(".en") else vocab,
        "n_text_ctx": 448,
        "n_text_state": t_state,
        "n_text_head": t_head,
        "n_text_layer": t_layer,
    }
    audio = _prefix(shapes, "conv1.weight")
    if audio is not None:
        dims["n_audio_state"], dims["n_mels"] = shapes[audio + "conv1.weight"][:2]
        dims["n_audio_ctx"] = shapes.get(audio + "positional_embedding", (dims["n_audio_ctx"],))[0]
        dims["n_audio_layer"] = _count_blocks(shapes, audio) or dims["n_audio_layer"]
    text = _prefix(shapes, "token_embedding.weight")
    if text is not None:
        dims["n_vocab"], dims["n_text_state"] = shapes[text + "token_embedding.weight"]
        dims["n_text_ctx"] = shapes.get(text + "positional_embedding", (dims["n_text_ctx"],))[0]
        dims["n_text_layer"] = _count_blocks(shapes, text) or dims["n_text_layer"]
    return dims


def _prefix(shapes: Shapes, suffix: str) -> str | None:
    return next((key[: -len(suffix)] for key in shapes if key.endswith("." + suffix)), None)


def _count_blocks(shapes: Shapes, prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"blocks\.(\d+)\.")
    found = {int(m.group(1)) for key in shapes if (m := pattern.match(key))}
    return max(found) + 1 if found else 0


def _whisper_builder(shapes: Shapes) -> Any:
    def load_model(name: str, device: Any = None, download_root: Any = None, in_memory: bool = False) -> Any:
        import torch
        from whisper.model import ModelDimensions, Whisper

        model = Whisper(ModelDimensions(**whisper_dimensions(name, shapes)))
        # Whisper leaves the text positional embedding as torch.empty (its checkpoint always fills it): memory
        # garbage, NaN at times. A build from the architecture gives it a defined value instead.
        if not model.decoder.positional_embedding.is_meta:
            with torch.no_grad():
                torch.nn.init.normal_(model.decoder.positional_embedding, std=0.02)
        return model

    return load_model


class _FromConfigOnly:
    """`transformers.AutoModel` as ESPnet's Hugging Face post-encoder calls it, building the named model from its
    config.json alone (random weights: the checkpoint overwrites them), which offline comes from the cache."""

    @staticmethod
    def from_pretrained(name: str, *args: Any, **kwargs: Any) -> Any:
        from transformers import AutoConfig, AutoModel

        try:
            config = AutoConfig.from_pretrained(name)
        except OSError as err:
            from espzoo.errors import ModelConfigError

            raise ModelConfigError(
                f"This model's post-encoder is the Hugging Face model {name!r}, built from its config.json, which is "
                f"neither in the Hugging Face cache nor reachable ({type(err).__name__}); fetch it once with "
                f"`hf download {name} config.json` (its weights are in this model's checkpoint)."
            ) from None
        return AutoModel.from_config(config)


def missing_package_message(module: str) -> str:
    """One sentence naming the package a build needs and how to install it."""
    top = module.split(".")[0]
    pip_name, extra = OPTIONAL_PACKAGES.get(top, (top, None))
    how = f"pip install 'espzoo[{extra}]'" if extra else f"pip install {pip_name}"
    return f"This model's architecture needs the package {pip_name} (module {top!r}), which is not installed; {how}."


# Optional packages some ESPnet architectures import while being built: module -> (pip package, espzoo extra).
OPTIONAL_PACKAGES: dict[str, tuple[str, str | None]] = {
    "s3prl": ("espnet-s3prl", "ssl"),
    "transformers": ("transformers", "ssl"),
    "whisper": ("openai-whisper", "whisper"),
    "longformer": ("longformer", None),
    "k2": ("k2", None),
    "fairseq": ("fairseq", None),
    "warprnnt_pytorch": ("warprnnt_pytorch", None),
    "loralib": ("loralib", "whisper"),
}
