"""Models as ESPnet's Speech2Text: locate an experiment dir, a hub-layout folder or a repo id, load it
(LoRA adapters attached, S2T prompts set) and decode one wave or a batch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from espzoo.errors import EvaluateError
from espzoo.models.bundle import resolve_config_paths
from espzoo.repo import config_sample_rate, is_adapter_only, model_reference
from espzoo.tasks import FAMILIES, task_of
from espzoo.utils.yaml_io import load_yaml

if TYPE_CHECKING:
    import numpy as np

    from espzoo.hub.session import Snapshot
from espzoo.decode.guards import _nothing, _padding_guards
from espzoo.errors import ModelNotFoundError


@dataclass(frozen=True)
class ModelFiles:
    """What decoding needs, wherever the model came from. `config` has its paths made absolute."""

    source: str  # what the user named: an OUT dir, a folder, a repo id
    kind: str  # "experiment" (espzoo finetune's OUT) or "hub" (ESPnet hub layout)
    root: Path
    config: dict[str, Any]
    checkpoint: Path
    sample_rate: int
    commit: str | None = None  # the hub commit, for a pulled repo
    # espzoo's record of the fine-tuning run (an OUT's provenance.json, or an export's): an S2T model's prompt
    provenance: Path | None = None


# The longest audio decoded in one piece: the encoder's attention grows with the square of its length (300 s of a
# 4-head conformer: about 1 GB a layer; 2 h: 518 GB). Longer recordings are cut at pauses (espzoo.decode.longform).
MAX_DECODE_SECONDS = 300.0
DECODE_MODES = ("auto", "beam", "ctc-greedy")


@dataclass(frozen=True)
class DecodeOptions:
    """How to decode: ESPnet's Speech2Text beam search (its own defaults are beam 20, ctc_weight 0.5), or
    batched greedy CTC; in this process or in `jobs` worker processes."""

    beam_size: int = 4  # small: on CPU a beam of 20 is ~5x slower for a fraction of a point of WER
    ctc_weight: float | None = None  # None: the weight the model was trained with (model_conf.ctc_weight)
    device: str = "cpu"
    threads: int | None = None  # torch intra-op threads (per job); None: torch's default, or cores / jobs
    maxlenratio: float = 0.0  # 0: up to the encoder length, as ESPnet's default
    minlenratio: float = 0.0
    penalty: float = 0.0
    lang: str | None = None  # S2T (OWSM) models: the language to prompt with (default: the fine-tuning run's)
    # "beam": ESPnet's beam search, one utterance at a time; "ctc-greedy": padded batches through the encoder,
    # best CTC path per row; "auto": ctc-greedy for CTC-only models (no attention decoder to search with).
    decode: str = "auto"
    jobs: int | None = None  # worker processes, each with its own model; None: cores, capped by memory
    batch_seconds: float = 120.0  # ctc-greedy: padded audio per encoder batch
    pad_guards: bool = True  # ctc-greedy: keep padding out of the STFT and conformer convolutions (see greedy_ctc)
    # Long recordings (espzoo.decode.longform): audio longer than this many seconds is cut at pauses into windows of
    # at most this length, decoded window by window and stitched; None: longform.DEFAULT_MAX_SEGMENT. Shorter
    # audio: as before.
    max_segment: float | None = None
    # Language model (espzoo.models.lm): None/"auto" the model's own when it has one, "none" none, else a folder.
    lm: str | None = None
    lm_weight: float | None = None  # None: the LM's shipped decode weight, else models.lm.DEFAULT_WEIGHT

    def __post_init__(self) -> None:
        if self.lm_weight is not None:
            from espzoo.models.lm import check_weight

            check_weight(self.lm_weight)
        if self.decode not in DECODE_MODES:
            raise EvaluateError(f"decode mode {self.decode!r} is unknown; use one of {', '.join(DECODE_MODES)}.")
        if self.jobs is not None and self.jobs < 1:
            raise EvaluateError(f"jobs={self.jobs}: pass 1 or more worker processes.")
        if self.max_segment is not None and not 1.0 <= self.max_segment <= MAX_DECODE_SECONDS:
            raise EvaluateError(f"max_segment={self.max_segment:g} s: pass between 1 and {MAX_DECODE_SECONDS:g} s.")


@dataclass
class Recognizer:
    """ESPnet's Speech2Text with the rate it expects; call it on a mono float waveform at that rate."""

    speech2text: Any
    sample_rate: int
    model: ModelFiles
    options: DecodeOptions
    ctc_weight: float  # the one in use: the option, else the model's
    lm: dict[str, Any] | None = None  # espzoo.models.lm: the LM fused in the beam search ({path, ..., weight}), or None

    @property
    def mode(self) -> str:
        """The decoding in use: "beam" or "ctc-greedy" (see DecodeOptions.decode)."""
        return "beam" if self.lm is not None else decode_mode(self.model.config, self.options)

    def __call__(self, wave: np.ndarray) -> str:
        if self.mode == "ctc-greedy":
            return self.greedy_ctc([wave])[0]
        import torch

        with torch.inference_mode(), _quiet_espnet():
            results = self.speech2text(wave)
        text, tokens, _, _ = results[0]
        return self._text(text, tokens)

    def greedy_ctc(self, waves: Sequence[np.ndarray]) -> list[str]:
        """Greedy CTC transcripts of `waves`, run as one zero-padded batch through ESPnet's encoder.

        Each row is read up to its own encoder length (the best class per frame, repeats merged, blanks
        dropped), as ESPnet's `ctc.argmax` does for intermediate CTC. Padding would reach a row's last frames
        through the STFT window and a conformer's convolutions (ESPnet masks attention, not those):
        `_padding_guards` keeps both out; other encoders' convolutions may still see some, which is why
        utterances of similar length are batched together, and bench/evaluate.py counts the differences.
        """
        import torch

        model = self.speech2text.asr_model
        lengths = torch.tensor([len(w) for w in waves], dtype=torch.long)
        speech = torch.zeros(len(waves), int(lengths.max()), dtype=getattr(torch, self.speech2text.dtype))
        for row, wave in enumerate(waves):
            speech[row, : len(wave)] = torch.as_tensor(wave)
        with torch.inference_mode(), _quiet_espnet(), _padding_guards(model) if self.options.pad_guards else _nothing():
            encoded, encoded_lengths = model.encode(speech.to(self.options.device), lengths.to(self.options.device))
            if isinstance(encoded, tuple):  # intermediate CTC outputs ride along
                encoded = encoded[0]
            best = model.ctc.argmax(encoded).cpu()
        return [self._ctc_text(best[row, : int(n)].tolist()) for row, n in enumerate(encoded_lengths.cpu())]

    def _ctc_text(self, frames: list[int]) -> str:
        from itertools import groupby

        model = self.speech2text.asr_model
        special = {model.blank_id, model.sos, model.eos}
        token_int = [token for token, _ in groupby(frames) if token not in special]
        tokens = self.speech2text.converter.ids2tokens(token_int)
        tokenizer = self.speech2text.tokenizer
        return self._text(tokenizer.tokens2text(tokens) if tokenizer is not None else None, tokens)

    @staticmethod
    def _text(text: str | None, tokens: list[str]) -> str:
        # Speech2Text leaves `text` None when it has no detokenizer (bpe without a model file): join tokens.
        return text if text is not None else " ".join(tokens)


def is_ctc_only(config: dict[str, Any]) -> bool:
    """A model without an attention decoder to search with (ctc_weight 1, or no decoder)."""
    model_conf = config.get("model_conf") or {}
    return float(model_conf.get("ctc_weight", 0.5)) >= 1.0 or config.get("decoder") in (None, "none")


def decode_mode(config: dict[str, Any], options: DecodeOptions) -> str:
    """"beam" or "ctc-greedy": the option, with "auto" meaning greedy CTC for CTC-only models only."""
    if task_of(config).prompted:  # S2T models decode with ESPnet's S2T inference, one utterance at a time
        if options.decode == "ctc-greedy":
            raise EvaluateError("--decode ctc-greedy is for ASR models; an S2T model decodes with ESPnet's S2T "
                                "inference (drop --decode).")
        return "beam"
    if options.decode != "auto":
        return options.decode
    return "ctc-greedy" if is_ctc_only(config) else "beam"


def locate_model(model: str | Path | Snapshot) -> ModelFiles:
    """Find a model's files: an experiment dir OUT, a hub-layout folder, a repo id `org/name[@rev]` (pulled),
    or a `hub.Snapshot` already pulled."""
    if not isinstance(model, (str, Path)):
        return _hub_files(Path(model.path), source=f"{model.repo_id}@{model.commit}", commit=model.commit)
    ref = model_reference(model)  # the one reading of MODEL, shared with plan/finetune (espzoo.repo)
    if ref.kind == "experiment" and (ref.path / "model.pth").is_file():  # type: ignore[operator]
        return _experiment_files(ref.path)  # type: ignore[arg-type]
    if ref.kind in ("experiment", "folder"):  # an ESPnet exp dir decodes through the bundle's own discovery
        return _hub_files(ref.path, source=str(model))  # type: ignore[arg-type]
    if ref.kind == "checkpoint":
        raise ModelNotFoundError(f"{model} is a file; pass an experiment dir, a model folder or a repo id.")
    if ref.kind == "invalid":
        raise ModelNotFoundError(ref.problem)
    from espzoo.hub.download import pull

    snapshot = pull(ref.repo_id, ref.revision)  # type: ignore[arg-type]
    return _hub_files(snapshot.path, source=str(model), commit=snapshot.commit)


def _experiment_files(root: Path) -> ModelFiles:
    config = _read_yaml(root / "config.yaml")
    return ModelFiles(
        source=str(root),
        kind="experiment",
        root=root.resolve(),
        config=resolve_config_paths(config, root),
        checkpoint=(root / "model.pth").resolve(),
        sample_rate=config_sample_rate(config),
        provenance=root / "provenance.json" if (root / "provenance.json").is_file() else None,
    )


def _hub_files(root: Path, *, source: str, commit: str | None = None) -> ModelFiles:
    from espzoo.models.bundle import open_bundle

    if is_adapter_only(root):
        return _adapter_files(root, source=source, commit=commit)
    bundle = open_bundle(root)
    if bundle.task not in FAMILIES:
        raise ModelNotFoundError(f"{source} is an ESPnet {bundle.task} model; espzoo evaluates asr and s2t models.")
    return ModelFiles(
        source=source,
        kind="hub",
        root=Path(bundle.root).resolve(),
        config=bundle.resolved_config(),
        checkpoint=Path(bundle.checkpoint),
        sample_rate=bundle.sample_rate or config_sample_rate(bundle.config),
        commit=commit,
        provenance=export_provenance(bundle.config_path),
    )


def _adapter_files(root: Path, *, source: str, commit: str | None) -> ModelFiles:
    """An adapter-only export (espzoo.lora): its config beside adapter.pth; the base comes at load time."""
    from espzoo.repo import meta_files

    named = meta_files(_read_yaml(root / "meta.yaml"), str(root / "meta.yaml"))  # asr_* or s2t_* keys
    config_path = root / str(named.config or "")
    if not named.config or not config_path.is_file():
        raise ModelNotFoundError(f"{root}/meta.yaml names no training config (yaml_files.asr_train_config); "
                                 "re-export the adapter.")
    config = _read_yaml(config_path)
    return ModelFiles(source=source, kind="adapter", root=root.resolve(), config=resolve_config_paths(config, root),
                      checkpoint=(root / "adapter.pth").resolve(), sample_rate=config_sample_rate(config),
                      commit=commit)


def load_recognizer(model: str | Path | Snapshot | ModelFiles, options: DecodeOptions | None = None) -> Recognizer:
    """ESPnet's Speech2Text for `model` (see `locate_model`), on CPU with a small beam by default.

    The checkpoint is loaded with `weights_only=True` by espzoo, not by ESPnet (whose
    `build_model_from_file` unpickles with `weights_only=False`): hub checkpoints are untrusted input.
    """
    import tempfile

    import torch

    from espzoo.models.espnet_env import import_asr_task

    files = model if isinstance(model, ModelFiles) else locate_model(model)
    options = options or DecodeOptions()
    if options.threads:
        torch.set_num_threads(options.threads)
    if task_of(files.config).prompted:
        return _s2t_recognizer(files, options)
    if options.lang:
        raise EvaluateError(f"--lang applies to S2T (OWSM) models; {files.source} is an ASR model (drop --lang).")
    with _quiet_espnet():
        import_asr_task()  # the offline NLTK setup, before asr_inference imports ESPnet's ASR chain
        from espnet2.bin.asr_inference import Speech2Text

    ctc_weight = _ctc_weight(files, options)
    from espzoo.models.bundle import load_state_dict
    from espzoo.models.upstreams import offline_upstreams, upstreams_in

    lm = _decode_lm(files, options)  # the LM to fuse (espzoo.models.lm), checked against the model's tokens
    state = load_state_dict(files.checkpoint)  # weights_only: refuses a pickle that would run code
    reference = {key: tuple(value.shape) for key, value in state.items()}
    with tempfile.TemporaryDirectory(prefix="espzoo-config-") as tmp, _quiet_espnet(), offline_upstreams(
        reference, upstreams_in(files.config)
    ):
        # Speech2Text reads the config once, at construction; the paths inside it are absolute.
        config_path = Path(tmp) / "config.yaml"
        config_path.write_text(yaml_dump(files.config), encoding="utf-8")
        speech2text = Speech2Text(
            asr_train_config=str(config_path),
            asr_model_file=None,  # weights loaded below, safely
            device=options.device,
            beam_size=options.beam_size,
            ctc_weight=ctc_weight,
            maxlenratio=options.maxlenratio,
            minlenratio=options.minlenratio,
            penalty=options.penalty,
            nbest=1,
            **(_lm_arguments(lm, Path(tmp)) if lm else {}),
        )
    _load_weights(speech2text.asr_model, files, state)
    speech2text.asr_model.to(options.device).eval()
    if lm:
        from espzoo.models.lm import load_into

        load_into(speech2text, lm[0])  # weights-only, never ESPnet's unpickler
    return Recognizer(speech2text, files.sample_rate, files, options, ctc_weight,
                      lm=dict(lm[0].describe(), weight=lm[1]) if lm else None)


def _decode_lm(files: ModelFiles, options: DecodeOptions) -> tuple[Any, float] | None:
    """(LanguageModel, weight) to fuse, or None: no LM, `--lm none`, a weight of 0, an S2T model, or ctc-greedy
    asked for by name (it has no search to fuse an LM in)."""
    from espzoo.models.lm import check_vocabulary, decode_lm, weight_in_use

    if files.kind == "adapter" or task_of(files.config).prompted:
        if options.lm not in (None, "auto", "none"):
            raise EvaluateError(f"--lm applies to ASR models; {files.source} is not one (drop --lm).")
        return None
    lm = decode_lm(files.root, files.kind, options.lm)
    if lm is None:
        if options.lm_weight and options.lm is None:
            raise EvaluateError(f"--lm-weight {options.lm_weight:g} needs an LM, and {files.source} has none; train "
                                f"one with `espzoo lm train {files.source} --text TEXT` or pass --lm DIR.")
        return None
    if options.decode == "ctc-greedy":
        if options.lm in (None, "auto"):
            return None  # greedy asked for by name: the model's own LM stays out, as before
        raise EvaluateError("--decode ctc-greedy has no search to fuse an LM in; drop --decode or pass --lm none.")
    weight = weight_in_use(lm, options.lm_weight)
    if weight == 0.0:
        return None
    check_vocabulary(lm, list(files.config.get("token_list") or []), files.source)
    return lm, weight


def lm_in_use(files: ModelFiles, options: DecodeOptions) -> dict[str, Any] | None:
    """What `--json` says about the LM a decode with these options uses ({path, config, file, type, vocab_size,
    weight}), or None."""
    found = _decode_lm(files, options)
    return dict(found[0].describe(), weight=found[1]) if found else None


def _lm_arguments(lm: tuple[Any, float], folder: Path) -> dict[str, Any]:
    from espzoo.models.lm import write_config

    return {"lm_train_config": str(write_config(lm[0], folder)), "lm_file": None, "lm_weight": lm[1]}


def _s2t_recognizer(files: ModelFiles, options: DecodeOptions) -> Recognizer:
    """ESPnet's S2T inference (models.s2t) prompted with --lang, the fine-tuning run's language or the default."""
    import tempfile

    from espzoo.models.bundle import load_state_dict
    from espzoo.models.s2t import build_decoder, decode_ctc_weight

    prompt = decode_prompt(files, options)
    ctc_weight = options.ctc_weight if options.ctc_weight is not None else decode_ctc_weight(files.config)
    with tempfile.TemporaryDirectory(prefix="espzoo-config-") as tmp, _quiet_espnet():
        config_path = Path(tmp) / "config.yaml"
        config_path.write_text(yaml_dump(files.config), encoding="utf-8")
        decoder = build_decoder(
            config_path, files.config, prompt, sample_rate=files.sample_rate, device=options.device,
            beam_size=options.beam_size, ctc_weight=ctc_weight, maxlenratio=options.maxlenratio,
            minlenratio=options.minlenratio, penalty=options.penalty,
        )
    _load_weights(decoder.model, files, load_state_dict(files.checkpoint))  # weights_only
    decoder.model.to(options.device).eval()
    return Recognizer(decoder, files.sample_rate, files, options, ctc_weight)


def _load_weights(model: Any, files: ModelFiles, state: dict[str, Any]) -> None:
    """`state` into `model`; a LoRA experiment or adapter-only export (espzoo.lora) gets its adapters first (else
    strict=False would drop them silently and decode the base model) and merged after (decoding then costs
    what the base model's does)."""
    adapted = (files.root / "adapter_config.yaml").is_file() and files.kind in ("experiment", "adapter")
    if adapted:
        from espzoo.lora.files import attach

        state = attach(model, files.root, state)
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys:
        raise EvaluateError(
            f"{files.checkpoint} lacks {len(result.missing_keys)} tensors the model in its config needs "
            f"({', '.join(result.missing_keys[:5])}, ...); the checkpoint and config.yaml do not belong together."
        )
    if adapted:
        from espzoo.lora.layer import merge_adapters

        merge_adapters(model)


def decode_prompt(files: ModelFiles, options: DecodeOptions) -> Any:
    """The S2T prompt (espzoo.models.s2t.Prompt) to decode `files` with: --lang, else the fine-tuning run's language
    (from its provenance: a new language's token included), else the model's default; None for an ASR model."""
    import json

    from espzoo.models.s2t import Prompt, default_prompt

    if not task_of(files.config).prompted:
        return None
    if options.lang:
        return Prompt.for_language(options.lang)
    provenance = json.loads(files.provenance.read_text(encoding="utf-8")) if files.provenance else None
    return default_prompt(list(files.config.get("token_list") or []), provenance)


def export_provenance(config_path: Path) -> Path | None:
    """An espzoo export keeps its fine-tuning record beside the training config (espzoo.publish:
    exp/<name>/espzoo/provenance.json); None for any other repo."""
    path = Path(config_path).parent / "espzoo" / "provenance.json"
    return path if path.is_file() else None


@contextmanager
def _quiet_espnet() -> Iterator[None]:
    """ESPnet prints import notes to stdout (flash_attn missing) and raises FutureWarnings from torch.cuda.amp:
    moved to stderr / hidden, so that stdout stays what espzoo's commands print (JSON, transcripts)."""
    import contextlib
    import sys
    import warnings

    with contextlib.redirect_stdout(sys.stderr), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        yield


def yaml_dump(data: Any) -> str:
    import yaml

    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False)


def _read_yaml(path: Path) -> dict[str, Any]:

    with path.open(encoding="utf-8") as f:
        data = load_yaml(f)
    if not isinstance(data, dict):
        raise EvaluateError(f"{path} is not an ESPnet config (expected a mapping at the top).")
    return data


def model_language(files: ModelFiles, options: DecodeOptions) -> str | None:
    """The language a model transcribes, where it says: --lang, its fine-tuning record, its card's front matter."""
    import json

    if options.lang:
        return options.lang
    if files.provenance:
        try:
            record = json.loads(files.provenance.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            record = {}
        language = record.get("language") or (record.get("languages") or [None])[0]
        if language:
            return str(language)
    card = files.root / "README.md"
    if files.kind != "experiment" and card.is_file():
        import yaml

        text = card.read_text(encoding="utf-8", errors="replace")
        if text.startswith("---"):
            try:
                front = load_yaml(text.split("---", 2)[1]) or {}
            except yaml.YAMLError:
                front = {}
            language = front.get("language") if isinstance(front, dict) else None
            if isinstance(language, list) and len(language) == 1:
                language = language[0]
            if isinstance(language, str):
                return language
    return None


def _ctc_weight(files: ModelFiles, options: DecodeOptions) -> float:
    """The CTC weight of the beam search: the option, else the one the model was trained with."""
    if options.ctc_weight is not None:
        return options.ctc_weight
    return float((files.config.get("model_conf") or {}).get("ctc_weight", 0.5))
