"""An evaluation: decode a data set, score it (raw and normalized, with 95% intervals), and the report that
comes out of it (JSON, comparisons between two reports, the before/after of a fine-tune).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from espzoo.decode.scores import (
    RESAMPLES,
    SEED,
    TextNormalizer,
    bootstrap_ci,
    empty_after_normalizing,
    paired_difference,
    real_speakers,
    text_normalizer,
)
from espzoo.errors import EvaluateError, NotComparableError
from espzoo.utils.fs import public_mode, replace_dir

if TYPE_CHECKING:

    from espzoo.hub.session import Snapshot
import shutil
import tempfile

from espzoo.decode.recognizer import (
    DecodeOptions,
    Recognizer,
    _ctc_weight,
    decode_prompt,
    lm_in_use,
    locate_model,
    model_language,
)
from espzoo.decode.runner import Progress, _decode, prepared_utterances
from espzoo.decode.scoring import Score, error_rates
from espzoo.models.lm import check_weight


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
    """The scores of the normalized texts, with the normalizer's name (espzoo.decode.scores)."""

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
    lm: dict[str, Any] | None = None  # the LM fused in the search (espzoo.models.lm: path, type, vocab_size, weight)

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
    `html`: a folder for the error report a person reads (espzoo.decode.html_report), refused before decoding when it
    holds other files, unless `force`.
    """
    from espzoo.decode.html_report import check_report_dir, write_html_report

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


def write_report(report: EvalReport, out_dir: Path) -> Path:
    """ref.trn, hyp.trn, text and result.json, written to a temp folder that then replaces `out_dir`."""
    import json
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


def _data_name(data: Path) -> str:
    from espzoo.data.hfdata import is_hf_source, source_name

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


def sweep(model: str | Path, data: str | Path, weights: Sequence[float], *, options: Any = None,
          out_dir: str | Path | None = None, **evaluate_args: Any) -> list[Any]:
    """Evaluate `model` on `data` once per LM weight (0: without the LM), in order; returns the EvalReports.
    Each result goes to `out_dir/lm_weight_W/` when `out_dir` is given, else nowhere (OUT/eval stays as it was)."""
    from dataclasses import replace

    from espzoo.decode.recognizer import DecodeOptions

    options = options or DecodeOptions()
    reports = []
    with tempfile.TemporaryDirectory(prefix="espzoo-sweep-") as scratch:
        for weight in weights:
            check_weight(weight)
            where = Path(out_dir or scratch) / f"lm_weight_{weight:g}"
            reports.append(evaluate(model, data, where, options=replace(options, lm_weight=weight), **evaluate_args))
    return reports
