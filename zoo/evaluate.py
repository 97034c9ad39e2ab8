"""Decoding with ESPnet's Speech2Text, word and character error rates, transcription.

    from espzoo.evaluate import error_rates, evaluate, transcribe

    error_rates(["the cat sat"], ["the cat sat down"]).wer.rate   # 1 insertion / 3 words = 0.333...
    report = evaluate("exp/bn_ft", "data/test")                   # an experiment dir, a pulled repo or a repo id
    print(report.wer.rate, report.cer.rate, report.utterances)
    transcribe("exp/bn_ft", ["a.wav", "b.flac"])                  # one string per file
    report.normalized.wer.rate, report.ci95["wer"]                # normalized WER (espzoo.scores), 95% interval
    compare(before_report, report).to_dict()["wer"]               # {a, b, difference, ci95}: paired bootstrap

Error rates follow ESPnet's scoring (egs2/TEMPLATE/asr1/asr.sh + sclite): a minimum-edit-distance alignment
of reference and hypothesis tokens, rate = (substitutions + deletions + insertions) / reference tokens,
summed over the corpus before dividing (not an average of per-utterance rates). Words are whitespace-split.
Characters are what `espnet2.bin.tokenize_text --token_type char` makes of the text: every character,
with the space between words kept as a `<space>` token, so a missing space counts as an error, as in
ESPnet's CER tables. Runs of whitespace are collapsed and the ends stripped first, on both sides, and
both are put in Unicode NFC, so that an accent typed as one code point or as a combining mark compares
equal (the one place we differ from sclite, which compares bytes).
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from espzoo._fs import public_mode, replace_dir
from espzoo.bundle import config_sample_rate, resolve_config_paths
from espzoo.errors import EspzooError, EvaluateError, NotComparableError
from espzoo.repo import is_adapter_only, model_reference
from espzoo.s2t import config_task
from espzoo.scores import (
    RESAMPLES,
    SEED,
    TextNormalizer,
    bootstrap_ci,
    empty_after_normalizing,
    paired_difference,
    real_speakers,
    text_normalizer,
)

if TYPE_CHECKING:
    import numpy as np

    from espzoo.hub import Snapshot

SPACE = "<space>"


# ---------------------------------------------------------------------------------------------------------
# Error rates


@dataclass(frozen=True)
class Score:
    """Alignment counts of a hypothesis against a reference (one utterance or a whole corpus)."""

    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0
    reference_length: int = 0  # N: reference tokens (words or characters)

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def correct(self) -> int:
        return self.reference_length - self.substitutions - self.deletions

    @property
    def rate(self) -> float:
        """(S + D + I) / N. An empty reference scores 0.0 against an empty hypothesis and
        infinity against anything else (sclite reports such a case as 100% + insertions; there is no N)."""
        if self.reference_length == 0:
            return 0.0 if self.errors == 0 else math.inf
        return self.errors / self.reference_length

    def __add__(self, other: Score) -> Score:
        return Score(
            self.substitutions + other.substitutions,
            self.deletions + other.deletions,
            self.insertions + other.insertions,
            self.reference_length + other.reference_length,
        )

    def to_dict(self) -> dict[str, float | int | None]:
        rate = self.rate
        return {
            "rate": None if math.isinf(rate) else rate,
            "substitutions": self.substitutions,
            "deletions": self.deletions,
            "insertions": self.insertions,
            "reference_length": self.reference_length,
        }


@dataclass(frozen=True)
class ErrorRates:
    """Word and character scores of a set of hypotheses, plus one pair per utterance."""

    wer: Score
    cer: Score
    per_utterance: list[tuple[Score, Score]] = field(default_factory=list)  # (word, char) per pair

    def to_dict(self) -> dict[str, object]:
        return {"wer": self.wer.to_dict(), "cer": self.cer.to_dict()}


def words(text: str) -> list[str]:
    """Word tokens: whitespace-separated, in Unicode NFC (so "é" typed either way is one letter)."""
    return unicodedata.normalize("NFC", text).split()


def chars(text: str) -> list[str]:
    """Character tokens as ESPnet's char tokenizer writes them: spaces between words become `<space>`."""
    tokens: list[str] = []
    for k, word in enumerate(words(text)):
        if k:
            tokens.append(SPACE)
        tokens.extend(word)
    return tokens


def align(reference: Sequence[str], hypothesis: Sequence[str]) -> Score:
    """Levenshtein alignment counts (S, D, I) with unit costs.

    Among alignments with the fewest errors, the backtrace prefers a match or substitution, then a
    deletion, then an insertion, so that counts are deterministic (sclite's tie-breaking differs only
    in which of equally cheap paths it reports; the total, and so the rate, is the same).
    """
    counts = {"S": 0, "D": 0, "I": 0, "=": 0}
    for op, _, _ in _backtrace(reference, hypothesis):
        counts[op] += 1
    return Score(counts["S"], counts["D"], counts["I"], len(reference))


def alignment(reference: Sequence[str], hypothesis: Sequence[str]) -> list[tuple[str, str | None, str | None]]:
    """The aligned pairs behind `align`'s counts, in order: ("=", ref, hyp) a match, ("S", ref, hyp) a
    substitution, ("D", ref, None) a deletion, ("I", None, hyp) an insertion."""
    return list(reversed(list(_backtrace(reference, hypothesis))))


def _backtrace(reference: Sequence[str], hypothesis: Sequence[str]) -> Iterator[tuple[str, str | None, str | None]]:
    """The operations of a minimum-edit alignment, last first (see `align` for the tie-breaking)."""
    import editdistance

    n, m = len(reference), len(hypothesis)
    # The distance, from C; every cell of an optimal path has |i - j| <= it (each step off the diagonal costs
    # one), so only that band of the table is filled: O(n * distance) instead of O(n * m), same counts.
    band = editdistance.eval(list(reference), list(hypothesis))
    unreachable = n + m + 1
    # cost[i][j]: edits to turn reference[:i] into hypothesis[:j] (within the band)
    cost = [[j if j <= band else unreachable for j in range(m + 1)]]
    for i in range(1, n + 1):
        row = [unreachable] * (m + 1)
        if i <= band:
            row[0] = i
        prev = cost[i - 1]
        ref_token = reference[i - 1]
        for j in range(max(1, i - band), min(m, i + band) + 1):
            diagonal = prev[j - 1] + (ref_token != hypothesis[j - 1])
            row[j] = min(diagonal, prev[j] + 1, row[j - 1] + 1)
        cost.append(row)

    i, j = n, m
    while i > 0 or j > 0:
        if i > 0 and j > 0 and cost[i][j] == cost[i - 1][j - 1] + (reference[i - 1] != hypothesis[j - 1]):
            yield ("S" if reference[i - 1] != hypothesis[j - 1] else "="), reference[i - 1], hypothesis[j - 1]
            i, j = i - 1, j - 1
        elif i > 0 and cost[i][j] == cost[i - 1][j] + 1:
            yield "D", reference[i - 1], None
            i -= 1
        else:
            yield "I", None, hypothesis[j - 1]
            j -= 1


def error_rates(
    references: Sequence[str], hypotheses: Sequence[str], normalize: Callable[[str], str] | None = None
) -> ErrorRates:
    """Corpus WER and CER of `hypotheses` against `references` (paired by position); with `normalize`
    (espzoo.scores.text_normalizer), of both sides normalized alike."""
    if len(references) != len(hypotheses):
        raise EvaluateError(
            f"got {len(references)} references but {len(hypotheses)} hypotheses; "
            "pass one hypothesis per reference."
        )
    if normalize is not None:
        references = [normalize(ref) for ref in references]
        hypotheses = [normalize(hyp) for hyp in hypotheses]
    pairs = [
        (align(words(ref), words(hyp)), align(chars(ref), chars(hyp)))
        for ref, hyp in zip(references, hypotheses, strict=True)
    ]
    wer = sum((w for w, _ in pairs), Score())
    cer = sum((c for _, c in pairs), Score())
    return ErrorRates(wer=wer, cer=cer, per_utterance=pairs)


# ---------------------------------------------------------------------------------------------------------
# Models: an experiment dir, a hub-layout folder or a repo id, opened as ESPnet's Speech2Text

# Config keys that hold paths (espzoo.bundle's docstring); only these are resolved, never token strings.


class ModelNotFoundError(EvaluateError):
    """The model named is not an experiment dir, a model folder or a repo id."""


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
    # Language model (espzoo.lm): None/"auto" the model's own when it has one, "none" none, else a folder.
    lm: str | None = None
    lm_weight: float | None = None  # None: the LM's shipped decode weight, else espzoo.lm.DEFAULT_WEIGHT

    def __post_init__(self) -> None:
        if self.lm_weight is not None:
            from espzoo.lm import check_weight

            check_weight(self.lm_weight)
        if self.decode not in DECODE_MODES:
            raise EvaluateError(f"decode mode {self.decode!r} is unknown; use one of {', '.join(DECODE_MODES)}.")
        if self.jobs is not None and self.jobs < 1:
            raise EvaluateError(f"jobs={self.jobs}: pass 1 or more worker processes.")


@dataclass
class Recognizer:
    """ESPnet's Speech2Text with the rate it expects; call it on a mono float waveform at that rate."""

    speech2text: Any
    sample_rate: int
    model: ModelFiles
    options: DecodeOptions
    ctc_weight: float  # the one in use: the option, else the model's
    lm: dict[str, Any] | None = None  # espzoo.lm: the LM fused in the beam search ({path, ..., weight}), None: none

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


@contextmanager
def _padding_guards(model: Any) -> Iterator[None]:
    """Make a padded batch give each row what it gives alone, where ESPnet lets padding leak in:

    * the frontend (STFT: a row's last window reads the next row's zeros instead of its own reflection)
      runs row by row on each row's own length, then is padded again;
    * the convolutional subsampling's output mask counts each row's frames as the row alone has them
      (ESPnet slices the padded input mask, which counts up to two frames more per row: frames that then
      take part in every attention and CTC of that row);
    * a conformer block's depthwise convolution (no mask in ESPnet) reads zeros past each row's end, as a
      row alone does from the convolution's own zero padding, instead of the padded frames' activations.
    """
    import torch

    handles = []
    frontend = getattr(model, "frontend", None)
    if frontend is not None:

        def per_row(module: Any, args: tuple[Any, ...], output: Any) -> Any:
            speech, lengths = args[0], args[1]
            rows = [module.forward(speech[i : i + 1, : int(n)], lengths[i : i + 1]) for i, n in enumerate(lengths)]
            feats_lengths = torch.cat([r[1] for r in rows])
            feats = output[0].new_zeros(len(rows), int(feats_lengths.max()), output[0].size(-1))
            for i, (row, _) in enumerate(rows):
                feats[i, : row.size(1)] = row[0]
            return feats, feats_lengths

        handles.append(frontend.register_forward_hook(per_row))
    embed = getattr(model.encoder, "embed", None)
    convs = [m for m in getattr(embed, "conv", []) if isinstance(m, torch.nn.Conv2d)]
    if convs:

        def own_lengths(module: Any, args: tuple[Any, ...], output: Any) -> Any:
            mask = output[1] if isinstance(output, tuple) and len(output) == 2 else None
            if not isinstance(mask, torch.Tensor) or len(args) < 2 or args[1] is None:
                return None
            lengths = args[1].sum(dim=-1).view(-1)
            for conv in convs:  # the time axis through each convolution, as for a row alone
                lengths = (lengths + 2 * conv.padding[0] - conv.kernel_size[0]) // conv.stride[0] + 1
            frames = torch.arange(mask.size(-1), device=mask.device)
            return output[0], (frames[None, :] < lengths[:, None]).unsqueeze(1) & mask.bool()

        handles.append(embed.register_forward_hook(own_lengths))
    for layer in model.encoder.modules():
        depthwise = getattr(getattr(layer, "conv_module", None), "depthwise_conv", None)
        if depthwise is None:
            continue
        state: dict[str, Any] = {}

        def keep_mask(module: Any, args: tuple[Any, ...], state: dict[str, Any] = state) -> None:
            mask = args[1] if len(args) > 1 else None
            state["mask"] = mask if isinstance(mask, torch.Tensor) and mask.dim() == 3 else None

        def zero_padding(module: Any, args: tuple[Any, ...], state: dict[str, Any] = state) -> Any:
            mask = state.get("mask")
            if mask is None or mask.size(-1) != args[0].size(-1):
                return None
            return (args[0].masked_fill(~mask.bool(), 0.0),)

        handles.append(layer.register_forward_pre_hook(keep_mask))
        handles.append(depthwise.register_forward_pre_hook(zero_padding))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def is_ctc_only(config: dict[str, Any]) -> bool:
    """A model without an attention decoder to search with (ctc_weight 1, or no decoder)."""
    model_conf = config.get("model_conf") or {}
    return float(model_conf.get("ctc_weight", 0.5)) >= 1.0 or config.get("decoder") in (None, "none")


def decode_mode(config: dict[str, Any], options: DecodeOptions) -> str:
    """"beam" or "ctc-greedy": the option, with "auto" meaning greedy CTC for CTC-only models only."""
    if config_task(config) != "asr":  # S2T models decode with ESPnet's S2T inference, one utterance at a time
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
    from espzoo.hub import pull

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
    from espzoo.bundle import open_bundle

    if is_adapter_only(root):
        return _adapter_files(root, source=source, commit=commit)
    bundle = open_bundle(root)
    if bundle.task not in ("asr", "s2t"):
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

    from espzoo._espnet import import_asr_task

    files = model if isinstance(model, ModelFiles) else locate_model(model)
    options = options or DecodeOptions()
    if options.threads:
        torch.set_num_threads(options.threads)
    if config_task(files.config) != "asr":
        return _s2t_recognizer(files, options)
    if options.lang:
        raise EvaluateError(f"--lang applies to S2T (OWSM) models; {files.source} is an ASR model (drop --lang).")
    with _quiet_espnet():
        import_asr_task()  # the offline NLTK setup, before asr_inference imports ESPnet's ASR chain
        from espnet2.bin.asr_inference import Speech2Text

    ctc_weight = _ctc_weight(files, options)
    from espzoo._upstreams import offline_upstreams, upstreams_in
    from espzoo.bundle import load_state_dict

    lm = _decode_lm(files, options)  # espzoo.lm hook: the LM to fuse, checked against the model's tokens
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
        from espzoo.lm import load_into

        load_into(speech2text, lm[0])  # weights-only, never ESPnet's unpickler
    return Recognizer(speech2text, files.sample_rate, files, options, ctc_weight,
                      lm=dict(lm[0].describe(), weight=lm[1]) if lm else None)


# --- language model hook (espzoo.lm) -------------------------------------------------------------------------


def _decode_lm(files: ModelFiles, options: DecodeOptions) -> tuple[Any, float] | None:
    """(LanguageModel, weight) to fuse, or None: no LM, `--lm none`, a weight of 0, an S2T model, or ctc-greedy
    asked for by name (it has no search to fuse an LM in)."""
    from espzoo.lm import check_vocabulary, decode_lm, weight_in_use

    if files.kind == "adapter" or config_task(files.config) != "asr":
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
    from espzoo.lm import write_config

    return {"lm_train_config": str(write_config(lm[0], folder)), "lm_file": None, "lm_weight": lm[1]}


def _s2t_recognizer(files: ModelFiles, options: DecodeOptions) -> Recognizer:
    """ESPnet's S2T inference (espzoo.s2t) prompted with --lang, the fine-tuning run's language or the default."""
    import tempfile

    from espzoo.bundle import load_state_dict
    from espzoo.s2t import build_decoder, decode_ctc_weight

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
        from espzoo.lora import attach

        state = attach(model, files.root, state)
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys:
        raise EvaluateError(
            f"{files.checkpoint} lacks {len(result.missing_keys)} tensors the model in its config needs "
            f"({', '.join(result.missing_keys[:5])}, ...); the checkpoint and config.yaml do not belong together."
        )
    if adapted:
        from espzoo.lora import merge_adapters

        merge_adapters(model)


def decode_prompt(files: ModelFiles, options: DecodeOptions) -> Any:
    """The S2T prompt (espzoo.s2t.Prompt) to decode `files` with: --lang, else the fine-tuning run's language
    (from its provenance: a new language's token included), else the model's default; None for an ASR model."""
    import json

    from espzoo.s2t import Prompt, default_prompt

    if config_task(files.config) == "asr":
        return None
    if options.lang:
        return Prompt.for_language(options.lang)
    provenance = json.loads(files.provenance.read_text(encoding="utf-8")) if files.provenance else None
    return default_prompt(list(files.config.get("token_list") or []), provenance)


def export_provenance(config_path: Path) -> Path | None:
    """An espzoo export keeps its fine-tuning record beside the training config (espzoo.export:
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
    import yaml

    with path.open(encoding="utf-8") as f:
        data = yaml.safe_load(f)
    if not isinstance(data, dict):
        raise EvaluateError(f"{path} is not an ESPnet config (expected a mapping at the top).")
    return data


# ---------------------------------------------------------------------------------------------------------
# Audio and data sets


class AudioFileMissing(EspzooError, FileNotFoundError):
    """Audio named for transcription that does not exist (still a FileNotFoundError for callers)."""


class AudioError(EvaluateError):
    """An audio file that cannot be read."""


# The longest audio decoded in one piece: the encoder's attention grows with the square of its length (300 s of a
# 4-head conformer: about 1 GB a layer; 2 h: 518 GB). Longer recordings are to be cut first.
MAX_DECODE_SECONDS = 300.0


@dataclass(frozen=True)
class Utterance:
    """One thing to decode: an id, its audio (a segment of it when `end` is set), its reference if known."""

    id: str
    audio: Path
    text: str | None = None
    start: float = 0.0  # seconds (Kaldi `segments`)
    end: float | None = None
    speaker: str | None = None  # utt2spk's (the utterance's own id where the data names no speakers)


def load_audio(path: Path, sample_rate: int, *, start: float = 0.0, end: float | None = None) -> np.ndarray:
    """A file (any format soundfile reads) as mono float32 at `sample_rate`: channels averaged, soxr-resampled."""
    import soundfile

    try:
        info = soundfile.info(str(path))
        first = int(round(start * info.samplerate))
        last = None if end is None else int(round(end * info.samplerate))
        seconds = ((last if last is not None else info.frames) - first) / info.samplerate
        if seconds > MAX_DECODE_SECONDS:  # attention over the whole file: 2 h asked for 518 GB
            raise AudioError(f"{path} lasts {seconds:.0f} s, over the {MAX_DECODE_SECONDS:.0f} s espzoo decodes in "
                             "one piece; cut it into shorter files first (e.g. ffmpeg -i IN -f segment "
                             "-segment_time 30 OUT%03d.wav).")
        wave, rate = soundfile.read(str(path), start=first, stop=last, dtype="float32", always_2d=True)
    except (RuntimeError, soundfile.LibsndfileError, OSError) as error:
        raise AudioError(f"cannot read audio {path} ({error}); check the path or convert it to WAV/FLAC.") from error
    wave = wave.mean(axis=1) if wave.shape[1] > 1 else wave[:, 0]
    if wave.size == 0:
        raise AudioError(f"audio {path} is empty; remove it from the data set.")
    if rate != sample_rate:
        import soxr

        wave = soxr.resample(wave, rate, sample_rate, quality="HQ").astype("float32", copy=False)
    return wave


@contextmanager
def prepared_utterances(
    data: str | Path, sample_rate: int, *, skip_bad: bool = False, audio_column: str | None = None,
    text_column: str | None = None,
) -> Iterator[list[Utterance]]:
    """The utterances of a data set with references, checked and converted by `espzoo.data.prepare`.

    `data` is a Kaldi dir (`wav.scp`, `text`, optional `segments`), a manifest (.csv/.tsv/.jsonl with audio
    and text) or a Hugging Face dataset (espzoo.hfdata); bad entries raise `DataError` listing them all, unless
    `skip_bad` drops them. Audio that is not mono at `sample_rate` is converted into a temporary folder that lives
    as long as the context.
    """
    import tempfile

    from espzoo.data import prepare

    with tempfile.TemporaryDirectory(prefix="espzoo-eval-") as tmp:
        dataset = prepare(data, Path(tmp) / "data", sample_rate=sample_rate, skip_bad=skip_bad,
                          audio_column=audio_column, text_column=text_column)
        texts = dataset.transcripts()
        speakers = _two_columns(dataset.dir / "utt2spk") if (dataset.dir / "utt2spk").is_file() else {}
        yield [
            Utterance(utt_id, Path(location), texts.get(utt_id, ""), speaker=speakers.get(utt_id, utt_id))
            for utt_id, location in _two_columns(dataset.wav_scp).items()
        ]


def _two_columns(path: Path) -> dict[str, str]:
    table: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        key, _, value = line.strip().partition(" ")
        if key:
            table[key] = value.strip()
    return table


# ---------------------------------------------------------------------------------------------------------
# Decoding, evaluation, transcription

Progress = Callable[[int, int], None]  # (done, total)


def decode(
    recognizer: Recognizer,
    utterances: str | Path | Iterable[Utterance | str | Path],
    *,
    progress: Progress | None = None,
) -> list[str]:
    """Transcripts of a data set's utterances (Kaldi dir or manifest), or of audio files (any rate, any
    channels), in order, in this process (see `evaluate`/`transcribe` for worker processes).

    Beam search takes one utterance at a time, as ESPnet's own asr_inference does (it refuses batch_size > 1):
    batching it would change results, since a conformer's convolution modules see the padding of shorter
    inputs. Greedy CTC (`DecodeOptions.decode`) batches utterances of similar length.
    """
    if isinstance(utterances, (str, Path)) and _is_data_set(Path(utterances)):
        with prepared_utterances(utterances, recognizer.sample_rate) as items:
            return _decode_here(recognizer, items, progress).hypotheses
    if isinstance(utterances, (str, Path)):
        utterances = [utterances]
    items = [u if isinstance(u, Utterance) else Utterance(Path(u).stem, Path(u)) for u in utterances]
    return _decode_here(recognizer, items, progress).hypotheses


@dataclass(frozen=True)
class Decoded:
    """Hypotheses in input order, the seconds of audio they cover, and how they were made."""

    hypotheses: list[str]
    audio_seconds: float
    mode: str
    jobs: int
    # Wall-clock seconds of decoding: after the model is loaded in this process; with worker processes,
    # from their start, so including each one's (parallel) model load.
    seconds: float = 0.0


# A worker process holds ESPnet and one model: ~0.6 GB resident on CPU before the model's own tensors.
WORKER_BASE_BYTES = 700 * 2**20


def default_jobs(files: ModelFiles, options: DecodeOptions, utterances: int) -> int:
    """`options.jobs`, else one worker per core while the memory available holds each one's model (GPUs: 1)."""
    if options.jobs is not None:
        return max(1, min(options.jobs, utterances))
    if options.device != "cpu":
        return 1
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    per_worker = WORKER_BASE_BYTES + 3 * files.checkpoint.stat().st_size  # weights, their float32 copy, activations
    available = _available_memory()
    by_memory = max(1, available // per_worker) if available else cores
    return max(1, min(cores, by_memory, utterances))


def _available_memory() -> int | None:
    """MemAvailable from /proc/meminfo, in bytes (None where there is no such file)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _units(items: list[Utterance], sample_rate: int, mode: str, batch_seconds: float) -> list[list[int]]:
    """Indices of `items` in the groups decoded together, longest first (so that workers finish together).

    Beam search: one utterance each. Greedy CTC: runs of similar length whose padded size (rows x the
    longest) stays within `batch_seconds` of audio, which keeps padding, and its effect, small.
    """
    import soundfile

    def seconds(u: Utterance) -> float:
        if u.end is not None:
            return u.end - u.start
        try:
            return soundfile.info(str(u.audio)).duration - u.start
        except (RuntimeError, soundfile.LibsndfileError, OSError):
            return 0.0  # unreadable: load_audio names it when its unit is decoded

    lengths = [seconds(u) for u in items]
    order = sorted(range(len(items)), key=lambda i: -lengths[i])
    if mode != "ctc-greedy":
        return [[i] for i in order]
    units: list[list[int]] = []
    for i in order:  # longest first: a unit's first row is its longest
        if units and (len(units[-1]) + 1) * lengths[units[-1][0]] <= batch_seconds:
            units[-1].append(i)
        else:
            units.append([i])
    return units


def _decode_unit(recognizer: Recognizer, items: Sequence[Utterance]) -> tuple[list[str], float]:
    waves = [load_audio(u.audio, recognizer.sample_rate, start=u.start, end=u.end) for u in items]
    seconds = sum(len(w) for w in waves) / recognizer.sample_rate
    if recognizer.mode == "ctc-greedy":
        return recognizer.greedy_ctc(waves), seconds
    return [recognizer(w) for w in waves], seconds


@dataclass
class _Merge:
    """Decoded units put back in input order, with the audio seconds they cover and progress reported."""

    total: int
    progress: Progress | None
    hypotheses: list[str] = field(default_factory=list)
    audio_seconds: float = 0.0
    done: int = 0

    def __post_init__(self) -> None:
        self.hypotheses = [""] * self.total

    def add(self, unit: list[int], texts: list[str], seconds: float) -> None:
        for i, text in zip(unit, texts, strict=True):
            self.hypotheses[i] = text
        self.audio_seconds += seconds
        self.done += len(unit)
        if self.progress:
            self.progress(self.done, self.total)


def _decode_here(recognizer: Recognizer, items: list[Utterance], progress: Progress | None) -> Decoded:
    """Decode `items` in this process, with `recognizer`."""
    import time

    started = time.perf_counter()
    merged = _Merge(len(items), progress)
    units = _units(items, recognizer.sample_rate, recognizer.mode, recognizer.options.batch_seconds)
    if recognizer.mode != "ctc-greedy":
        units.sort()  # one at a time: input order, so that a failure names the first bad file
    for unit in units:
        merged.add(unit, *_decode_unit(recognizer, [items[i] for i in unit]))
    return Decoded(merged.hypotheses, merged.audio_seconds, recognizer.mode, 1, time.perf_counter() - started)


class DecodeWorkerError(EvaluateError):
    """A decoding worker process died (killed, out of memory) before it finished."""


def _decode_in_workers(
    files: ModelFiles, options: DecodeOptions, items: list[Utterance], jobs: int, progress: Progress | None
) -> Decoded:
    """Decode `items` in `jobs` fresh processes, each loading its own model; results merged in input order.

    Processes are spawned, not forked: a fork of a process whose torch thread pool is running can hang.
    Each job gets cores / jobs torch threads unless `options.threads` says otherwise.
    """
    import multiprocessing
    import os
    import time
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool
    from dataclasses import replace

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    worker_options = replace(options, jobs=1, threads=options.threads or max(1, cores // jobs))
    mode = "beam" if lm_in_use(files, options) else decode_mode(files.config, options)  # espzoo.lm hook
    units = _units(items, files.sample_rate, mode, options.batch_seconds)
    started = time.perf_counter()
    merged = _Merge(len(items), progress)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(jobs, mp_context=context, initializer=_worker_start,
                             initargs=(files, worker_options)) as pool:
        pending = {pool.submit(_worker_decode, [items[i] for i in unit]): unit for unit in units}
        try:
            while pending:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    merged.add(pending.pop(future), *future.result())
        except BrokenProcessPool:
            raise DecodeWorkerError(
                f"a decoding worker process died (out of memory, or killed); run again with fewer jobs "
                f"(--jobs {max(1, jobs // 2)})."
            ) from None
        finally:
            for future in pending:
                future.cancel()
    return Decoded(merged.hypotheses, merged.audio_seconds, mode, jobs, time.perf_counter() - started)


_WORKER: dict[str, Any] = {}  # in a worker process: what _worker_start was given, and the model once loaded


def _worker_start(files: ModelFiles, options: DecodeOptions) -> None:
    # Loading the model happens in the first task, not here: an initializer that raises breaks the whole pool
    # with no message, while a task's exception (a bad checkpoint, say) comes back to the caller as it is.
    _WORKER.update(files=files, options=options)


def _worker_decode(items: list[Utterance]) -> tuple[list[str], float]:
    if "recognizer" not in _WORKER:
        _WORKER["recognizer"] = load_recognizer(_WORKER["files"], _WORKER["options"])
    return _decode_unit(_WORKER["recognizer"], items)


@dataclass(frozen=True)
class UtteranceResult:
    id: str
    reference: str
    hypothesis: str
    word: Score
    char: Score
    speaker: str | None = None
    normalized: tuple[Score, Score] | None = None  # (word, char) of the normalized texts

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id,
            "reference": self.reference,
            "hypothesis": self.hypothesis,
            "word": self.word.to_dict(),
            "char": self.char.to_dict(),
        }
        if self.speaker is not None:
            data["speaker"] = self.speaker
        if self.normalized is not None:
            data["normalized"] = {"word": self.normalized[0].to_dict(), "char": self.normalized[1].to_dict()}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UtteranceResult:
        normalized = data.get("normalized")
        return cls(
            str(data["id"]), str(data["reference"]), str(data["hypothesis"]), _score(data["word"]),
            _score(data["char"]), data.get("speaker"),
            (_score(normalized["word"]), _score(normalized["char"])) if normalized else None,
        )


def _score(data: dict[str, Any]) -> Score:
    return Score(int(data["substitutions"]), int(data["deletions"]), int(data["insertions"]),
                 int(data["reference_length"]))


@dataclass(frozen=True)
class Normalized:
    """The scores of the normalized texts, with the normalizer's name (espzoo.scores)."""

    wer: Score
    cer: Score
    normalizer: str
    ci95: dict[str, tuple[float, float] | None] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "wer": self.wer.to_dict()["rate"],
            "cer": self.cer.to_dict()["rate"],
            "normalizer": self.normalizer,
            "ci95": _intervals(self.ci95),
            "word": self.wer.to_dict(),
            "char": self.cer.to_dict(),
        }


def _intervals(ci95: dict[str, tuple[float, float] | None]) -> dict[str, list[float] | None]:
    return {key: (None if value is None else [round(value[0], 6), round(value[1], 6)]) for key, value in ci95.items()}


@dataclass(frozen=True)
class EvalReport:
    """What `evaluate` measured; `to_dict()` is what `espzoo evaluate --json` prints and result.json holds."""

    model: str
    data: str
    wer: Score
    cer: Score
    rows: list[UtteranceResult]
    beam_size: int
    ctc_weight: float
    audio_seconds: float
    decode_seconds: float
    commit: str | None = None
    out_dir: Path | None = None
    decode: str = "beam"  # "beam" or "ctc-greedy"
    jobs: int = 1  # processes that decoded
    prompt: list[str] | None = None  # an S2T model's prompt: [language, task] tokens
    normalized: Normalized | None = None
    ci95: dict[str, tuple[float, float] | None] = field(default_factory=dict)  # wer, cer: 95% bootstrap intervals
    resampled: str = "utterances"  # what the bootstrap drew: "utterances" or "speakers"
    experiment: Path | None = None  # the model's OUT, when it is one (its training curves go in the HTML report)
    baseline: dict[str, Any] | None = None  # a comparison with another model on the same data (Comparison.to_dict)
    lm: dict[str, Any] | None = None  # the LM fused in the search (espzoo.lm: path, type, vocab_size, weight)

    @property
    def utterances(self) -> int:
        return len(self.rows)

    @property
    def real_time_factor(self) -> float:
        return self.decode_seconds / self.audio_seconds if self.audio_seconds else 0.0

    def to_dict(self, *, rows: bool = True) -> dict[str, Any]:
        data: dict[str, Any] = {
            "model": self.model,
            "commit": self.commit,
            "data": self.data,
            "wer": self.wer.to_dict()["rate"],
            "cer": self.cer.to_dict()["rate"],
            "ci95": _intervals(self.ci95),
            "bootstrap": {"over": self.resampled, "resamples": RESAMPLES, "seed": SEED},
            "normalized": self.normalized.to_dict() if self.normalized else None,
            "utterances": self.utterances,
            "word": self.wer.to_dict(),
            "char": self.cer.to_dict(),
            "beam_size": self.beam_size,
            "ctc_weight": self.ctc_weight,
            "decode": self.decode,
            "jobs": self.jobs,
            "audio_seconds": round(self.audio_seconds, 3),
            "decode_seconds": round(self.decode_seconds, 3),
            "real_time_factor": round(self.real_time_factor, 4),
            "out_dir": str(self.out_dir) if self.out_dir else None,
        }
        if self.prompt:
            data["prompt"] = self.prompt
        if self.lm:  # only with an LM: a decode without one reports exactly what it did before
            data["lm"] = self.lm
            data["lm_weight"] = self.lm.get("weight")
        if self.baseline:
            data["baseline"] = self.baseline
        data["per_utterance"] = [
            {"id": r.id, "ref": r.reference, "hyp": r.hypothesis, "errors": r.word.errors,
             "words": r.word.reference_length}
            for r in self.rows
        ]
        if rows:
            data["rows"] = [row.to_dict() for row in self.rows]
        return data


def scored(
    ids: Sequence[str], references: Sequence[str], hypotheses: Sequence[str], speakers: Sequence[str | None],
    normalize: TextNormalizer | None,
) -> dict[str, Any]:
    """The scores of an evaluation, as EvalReport fields: rows, wer, cer, ci95, resampled, normalized."""
    rates = error_rates(references, hypotheses)
    normal = error_rates(references, hypotheses, normalize) if normalize else None
    groups = list(speakers) if real_speakers(speakers, ids) else None
    rows = [
        UtteranceResult(utt, ref, hyp, word, char, speaker, normal.per_utterance[k] if normal else None)
        for k, (utt, ref, hyp, speaker, (word, char)) in enumerate(
            zip(ids, references, hypotheses, speakers, rates.per_utterance, strict=True)
        )
    ]
    normalized = None
    if normal is not None and normalize is not None:
        normalized = Normalized(normal.wer, normal.cer, normalize.name, _intervals95(normal.per_utterance, groups))
    return {"rows": rows, "wer": rates.wer, "cer": rates.cer, "ci95": _intervals95(rates.per_utterance, groups),
            "resampled": "speakers" if groups else "utterances", "normalized": normalized}


def _intervals95(pairs: Sequence[tuple[Score, Score]], groups: list[str] | None) -> dict[str, Any]:
    """{"wer": (lo, hi), "cer": (lo, hi)} of (word, char) score pairs, resampling utterances or `groups`."""
    return {
        name: bootstrap_ci([p[k].errors for p in pairs], [p[k].reference_length for p in pairs], groups)
        for k, name in ((0, "wer"), (1, "cer"))
    }


def evaluate(
    model: str | Path | Snapshot | Recognizer,
    data: str | Path,
    out_dir: str | Path | None = None,
    *,
    options: DecodeOptions | None = None,
    skip_bad: bool = False,
    progress: Progress | None = None,
    audio_column: str | None = None,
    text_column: str | None = None,
    normalizer: str = "auto",
    html: str | Path | None = None,
    force: bool = False,
) -> EvalReport:
    """Decode a data set with references and score it: as written, and normalized (`normalizer`: "auto" is
    whisper-normalizer's English normalizer for an English model, its basic one otherwise; "none" skips it), each
    with a 95% bootstrap interval.

    Writes `ref.trn`, `hyp.trn` (sclite's trn format), `text` (hypotheses, Kaldi style) and `result.json` to
    `out_dir`; by default, for an experiment dir, to `OUT/eval/<data name>/` (where `espzoo export` finds the
    results for the model card), and nowhere for other models. The folder is replaced whole, never half-written.
    `html`: a folder for the error report a person reads (espzoo.html_report), refused before decoding when it
    holds other files, unless `force`.
    """
    from espzoo.html_report import check_report_dir, write_html_report

    # The data is checked before the model is built (seconds), so that bad data fails fast.
    files = model.model if isinstance(model, Recognizer) else locate_model(model)
    options = model.options if isinstance(model, Recognizer) else (options or DecodeOptions())
    normalize = text_normalizer(normalizer, model_language(files, options))
    if html is not None:
        check_report_dir(Path(html), force=force)
    with prepared_utterances(data, files.sample_rate, skip_bad=skip_bad, audio_column=audio_column,
                             text_column=text_column) as utterances:
        references = [u.text or "" for u in utterances]
        if normalize is not None:
            empty_after_normalizing([u.id for u in utterances], references, normalize)
        decoded = _decode(model, files, options, utterances, progress)
    hypotheses, audio_seconds, decode_seconds = decoded.hypotheses, decoded.audio_seconds, decoded.seconds

    scores = scored([u.id for u in utterances], references, hypotheses, [u.speaker for u in utterances], normalize)
    if out_dir is None and files.kind == "experiment":
        out_dir = files.root / "eval" / _data_name(Path(data))
    prompt = decode_prompt(files, options)
    report = EvalReport(
        model=files.source,
        data=str(data),
        beam_size=options.beam_size,
        ctc_weight=_ctc_weight(files, options),
        audio_seconds=audio_seconds,
        decode_seconds=decode_seconds,
        commit=files.commit,
        out_dir=Path(out_dir) if out_dir else None,
        decode=decoded.mode,
        jobs=decoded.jobs,
        prompt=[prompt.lang, prompt.task] if prompt else None,
        experiment=files.root if files.kind == "experiment" else None,
        lm=model.lm if isinstance(model, Recognizer) else lm_in_use(files, options),
        **scores,
    )
    if report.out_dir:
        write_report(report, report.out_dir)
    if html is not None:
        write_html_report(report, Path(html), force=force)
    return report


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
                front = yaml.safe_load(text.split("---", 2)[1]) or {}
            except yaml.YAMLError:
                front = {}
            language = front.get("language") if isinstance(front, dict) else None
            if isinstance(language, list) and len(language) == 1:
                language = language[0]
            if isinstance(language, str):
                return language
    return None


@dataclass(frozen=True)
class Comparison:
    """Model B against model A on the same utterances: each rate, B - A, and its 95% paired bootstrap interval."""

    a: str
    b: str
    data: str
    utterances: int
    resampled: str
    metrics: dict[str, dict[str, Any]]  # wer, cer, and normalized_wer/_cer: {a, b, difference, ci95}

    def to_dict(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "data": self.data, "utterances": self.utterances,
                "bootstrap": {"over": self.resampled, "resamples": RESAMPLES, "seed": SEED, "paired": True},
                **self.metrics}


def compare(a: EvalReport, b: EvalReport) -> Comparison:
    """B - A on the same data, metric by metric, with paired bootstrap intervals (the same resampled utterances,
    or speakers, for both). Refuses two runs whose utterances or references differ."""
    if [r.id for r in a.rows] != [r.id for r in b.rows] or [r.reference for r in a.rows] != [
        r.reference for r in b.rows
    ]:
        raise NotComparableError(
            f"{a.model} and {b.model} were not evaluated on the same utterances and references; evaluate both "
            "on one --data set."
        )
    speakers = [r.speaker for r in a.rows]
    groups = speakers if real_speakers(speakers, [r.id for r in a.rows]) else None
    columns = [("wer", 0, False), ("cer", 1, False)]
    if a.normalized and b.normalized and a.normalized.normalizer == b.normalized.normalizer:
        columns += [("normalized_wer", 0, True), ("normalized_cer", 1, True)]
    metrics: dict[str, dict[str, Any]] = {}
    for name, k, normal in columns:
        pick_a = [(r.normalized if normal else (r.word, r.char))[k] for r in a.rows]  # type: ignore[index]
        pick_b = [(r.normalized if normal else (r.word, r.char))[k] for r in b.rows]  # type: ignore[index]
        result = paired_difference([s.errors for s in pick_a], [s.errors for s in pick_b],
                                   [s.reference_length for s in pick_a], [s.reference_length for s in pick_b], groups)
        total_a, total_b = sum(pick_a, Score()), sum(pick_b, Score())
        metrics[name] = {
            "a": total_a.to_dict()["rate"], "b": total_b.to_dict()["rate"],
            "difference": None if result is None else round(result[0], 6),
            "ci95": None if result is None else [round(result[1][0], 6), round(result[1][1], 6)],
        }
    if len(columns) > 2:
        metrics["normalizer"] = a.normalized.normalizer  # type: ignore[union-attr,assignment]
    return Comparison(a.model, b.model, a.data, a.utterances, "speakers" if groups else "utterances", metrics)


def with_baseline(report: EvalReport, comparison: Comparison) -> EvalReport:
    """`report` (model B of `comparison`) recording it; its result.json is rewritten, so that `espzoo export`
    shows the before/after in the model card."""
    from dataclasses import replace

    updated = replace(report, baseline=comparison.to_dict())
    if updated.out_dir:
        write_report(updated, updated.out_dir)
    return updated


def load_result(path: str | Path) -> EvalReport:
    """An earlier evaluation, from its result.json (or the folder holding it), rows included."""
    import json

    path = Path(path)
    if path.is_dir():
        path = path / "result.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        rows = [UtteranceResult.from_dict(row) for row in data["rows"]]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise EvaluateError(
            f"{path} is not the result.json of an espzoo evaluation with its rows; pass the folder evaluate wrote "
            "(OUT/eval/<data> or --out-dir)."
        ) from error
    normalized = data.get("normalized")
    speakers = [r.speaker for r in rows]
    groups = speakers if real_speakers(speakers, [r.id for r in rows]) else None
    normal_pairs = [r.normalized for r in rows if r.normalized]
    return EvalReport(
        model=str(data.get("model")), data=str(data.get("data")), wer=sum((r.word for r in rows), Score()),
        cer=sum((r.char for r in rows), Score()), rows=rows, beam_size=int(data.get("beam_size") or 0),
        ctc_weight=float(data.get("ctc_weight") or 0.0), audio_seconds=float(data.get("audio_seconds") or 0.0),
        decode_seconds=float(data.get("decode_seconds") or 0.0), commit=data.get("commit"), out_dir=path.parent,
        decode=str(data.get("decode") or "beam"),
        normalized=Normalized(
            sum((r.normalized[0] for r in rows if r.normalized), Score()),
            sum((r.normalized[1] for r in rows if r.normalized), Score()), str(normalized.get("normalizer")),
            _intervals95(normal_pairs, groups) if len(normal_pairs) == len(rows) else {},
        ) if normalized else None,
        ci95=_intervals95([(r.word, r.char) for r in rows], groups),
        resampled="speakers" if groups else "utterances",
        baseline=data.get("baseline"), lm=data.get("lm"),
    )


def transcribe(
    model: str | Path | Snapshot | Recognizer,
    files: Sequence[str | Path],
    *,
    options: DecodeOptions | None = None,
    progress: Progress | None = None,
) -> list[str]:
    """One transcript per audio file, in order."""
    missing = [str(f) for f in files if not Path(f).is_file()]
    if missing:
        raise AudioFileMissing(f"no such audio file: {', '.join(missing)}; check the path.")
    located = model.model if isinstance(model, Recognizer) else locate_model(model)
    options = model.options if isinstance(model, Recognizer) else (options or DecodeOptions())
    items = [Utterance(Path(f).stem, Path(f)) for f in files]
    return _decode(model, located, options, items, progress).hypotheses


def _decode(
    model: object, files: ModelFiles, options: DecodeOptions, items: list[Utterance], progress: Progress | None
) -> Decoded:
    """With the Recognizer given, or in this process, or in worker processes (`default_jobs`).

    A model already loaded decodes here unless more jobs are asked for explicitly: loading it again in
    each worker costs more than it saves on a few utterances.
    """
    if isinstance(model, Recognizer) and options.jobs is None:
        return _decode_here(model, items, progress)
    jobs = default_jobs(files, options, len(items))
    if jobs > 1:
        return _decode_in_workers(files, options, items, jobs, progress)
    recognizer = model if isinstance(model, Recognizer) else load_recognizer(files, options)
    return _decode_here(recognizer, items, progress)


def _ctc_weight(files: ModelFiles, options: DecodeOptions) -> float:
    """The CTC weight of the beam search: the option, else the one the model was trained with."""
    if options.ctc_weight is not None:
        return options.ctc_weight
    return float((files.config.get("model_conf") or {}).get("ctc_weight", 0.5))


def write_report(report: EvalReport, out_dir: Path) -> Path:
    """ref.trn, hyp.trn, text and result.json, written to a temp folder that then replaces `out_dir`."""
    import json
    import shutil
    import tempfile

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    public_mode(tmp, directory=True)  # not mkdtemp's 0700: the report folder is an ordinary one
    try:
        (tmp / "ref.trn").write_text("".join(f"{r.reference} ({r.id})\n" for r in report.rows), encoding="utf-8")
        (tmp / "hyp.trn").write_text("".join(f"{r.hypothesis} ({r.id})\n" for r in report.rows), encoding="utf-8")
        (tmp / "text").write_text("".join(f"{r.id} {r.hypothesis}\n" for r in report.rows), encoding="utf-8")
        (tmp / "result.json").write_text(
            json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _is_data_set(path: Path) -> bool:
    from espzoo.hfdata import is_hf_source

    return path.is_dir() or path.suffix.lower() in (".csv", ".tsv", ".jsonl", ".json") or is_hf_source(path)


def _data_name(data: Path) -> str:
    from espzoo.hfdata import is_hf_source, source_name

    if is_hf_source(data):
        return source_name(data)
    return (data.name if data.is_dir() else data.stem) or "data"


def before_after(
    pretrained: str | Path,
    out: str | Path,
    datasets: Sequence[str | Path],
    *,
    options: DecodeOptions | None = None,
    normalizer: str = "auto",
    progress: Progress | None = None,
) -> list[Comparison]:
    """The pretrained model and the fine-tuned experiment dir `out` on each data set (the new domain's and a general
    one, say: `espzoo finetune --guard`), compared on the same utterances: the gain on one, what the other lost.

    Both are scored with one normalizer (the fine-tuned model's language decides "auto"), and OUT/eval/<data>/
    result.json records each comparison, so that `espzoo export` shows the before/after in the card."""
    files = locate_model(out)
    options = options or DecodeOptions()
    if normalizer == "auto":
        chosen = text_normalizer("auto", model_language(files, options))
        normalizer = "none" if chosen is None else ("english" if "English" in chosen.name else "basic")
    comparisons = []
    for data in datasets:
        before = evaluate(pretrained, data, options=options, normalizer=normalizer, progress=progress)
        after = evaluate(out, data, options=options, normalizer=normalizer, progress=progress)
        comparison = compare(before, after)
        with_baseline(after, comparison)
        comparisons.append(comparison)
    return comparisons
