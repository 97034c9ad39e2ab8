"""An evaluation as one HTML page a person reads: `espzoo evaluate ... --report DIR` writes DIR/index.html.

    from espzoo.decode.html_report import write_html_report
    write_html_report(report, Path("report"))      # report: espzoo.decode.EvalReport

The page is self-contained (inline style, the training curves embedded as data: URIs, no script, nothing fetched),
so it opens from disk, from a mail attachment or from a cluster's file browser alike. It shows the summary
(orthographic and normalized scores with their 95% intervals, a comparison when there is one), the most
frequent word confusions, the training curves of an experiment dir, and every utterance, worst first, with its
reference and hypothesis aligned word by word: substitutions, deletions and insertions marked.
"""

from __future__ import annotations

import base64
import html
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from espzoo.errors import ReportDirError
from espzoo.utils.fs import public_mode, replace_dir

if TYPE_CHECKING:
    from espzoo.decode.report import EvalReport, UtteranceResult


PAGE = "index.html"
CONFUSIONS = 25


def check_report_dir(path: Path, *, force: bool = False) -> None:
    """Refuse a `path` that is a file, or a folder with files other than an earlier report's, unless `force`."""
    if force or not path.exists():
        return
    if not path.is_dir():
        raise ReportDirError(f"{path} is a file; choose a folder for --report, or pass --force to replace it.")
    others = sorted(p.name for p in path.iterdir() if p.name != PAGE)
    if others:
        shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
        raise ReportDirError(
            f"{path} already holds other files ({shown}); choose an empty or new --report folder, or pass --force "
            "to replace it."
        )


def write_html_report(report: EvalReport, dest: Path, *, force: bool = False) -> Path:
    """DIR/index.html for `report`, written to a temporary folder that then replaces `dest` whole."""
    check_report_dir(dest, force=force)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    public_mode(tmp, directory=True)
    try:
        (tmp / PAGE).write_text(render(report), encoding="utf-8")
        replace_dir(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest / PAGE


# ---------------------------------------------------------------------------------------------------------


def worst_first(rows: list[UtteranceResult]) -> list[UtteranceResult]:
    """Highest word error rate first (more errors first among equal rates, then by id)."""

    def key(row: UtteranceResult) -> tuple[float, int, str]:
        n = row.word.reference_length
        rate = row.word.errors / n if n else (float(row.word.errors) and float("inf"))
        return (-rate, -row.word.errors, row.id)

    return sorted(rows, key=key)


def confusions(pairs: list[tuple[str, str]], normalize: Any = None) -> list[tuple[str, str, str, int]]:
    """The most frequent word errors over (reference, hypothesis) pairs: (kind, ref word, hyp word, count)."""
    from espzoo.decode.scoring import alignment, words

    counts: Counter[tuple[str, str, str]] = Counter()
    for ref, hyp in pairs:
        if normalize is not None:
            ref, hyp = normalize(ref), normalize(hyp)
        for op, r, h in alignment(words(ref), words(hyp)):
            if op != "=":
                counts[(op, r or "", h or "")] += 1
    return [(op, r, h, n) for (op, r, h), n in counts.most_common(CONFUSIONS)]


def _percent(rate: float | None) -> str:
    return "n/a" if rate is None or rate == float("inf") else f"{100 * rate:.2f}"


def _interval(ci: Any) -> str:
    if not ci:
        return ""
    lo, hi = ci
    return f"95% CI {100 * lo:.2f}–{100 * hi:.2f}"


def _aligned(row: UtteranceResult) -> str:
    from espzoo.decode.scoring import alignment, words

    cells = []
    for op, r, h in alignment(words(row.reference), words(row.hypothesis)):
        kind = {"=": "ok", "S": "sub", "D": "del", "I": "ins"}[op]
        mark = "" if op == "=" else f'<span class="op">{op}</span>'
        cells.append(
            f'<span class="w {kind}">{mark}<span class="r">{html.escape(r) if r is not None else "&nbsp;"}</span>'
            f'<span class="h">{html.escape(h) if h is not None else "&nbsp;"}</span></span>'
        )
    return "".join(cells) or '<span class="empty">(empty)</span>'


def _curves(report: EvalReport) -> list[tuple[str, str]]:
    """(name, data URI) of the experiment's training curves (espzoo.decode.curves), none for other models."""
    if report.experiment is None:
        return []
    from espzoo.decode import curves

    return [
        (image.stem, "data:image/png;base64," + base64.b64encode(image.read_bytes()).decode("ascii"))
        for image in curves.for_card(curves.find(report.experiment).images)
    ]


STYLE = """
:root { --ink:#1d2430; --muted:#5d6778; --line:#dfe3ea; --bg:#f6f7f9; --card:#fff;
  --sub:#b54708; --subbg:#fff3e0; --del:#b42318; --delbg:#fde8e7; --ins:#1764c0; --insbg:#e6f0fd; }
* { box-sizing: border-box; }
body { margin:0; font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans",sans-serif; color:var(--ink);
  background:var(--bg); }
main { max-width:1200px; margin:0 auto; padding:28px 24px 60px; }
h1 { font-size:24px; margin:0 0 4px; } h2 { font-size:18px; margin:32px 0 10px; }
.lead { color:var(--muted); margin:0 0 20px; word-break:break-all; }
.cards { display:grid; grid-template-columns:repeat(auto-fill,minmax(210px,1fr)); gap:12px; }
.card { background:var(--card); border:1px solid var(--line); border-radius:10px; padding:14px 16px; }
.card .k { color:var(--muted); font-size:13px; } .card .v { font-size:28px; font-weight:650; }
.card .c { color:var(--muted); font-size:12.5px; }
table { border-collapse:collapse; width:100%; background:var(--card); border:1px solid var(--line);
  border-radius:10px; overflow:hidden; }
th, td { text-align:left; padding:7px 10px; border-bottom:1px solid var(--line); vertical-align:top; }
th { background:#eef1f5; font-size:13px; color:var(--muted); font-weight:600; }
td.n { text-align:right; font-variant-numeric:tabular-nums; white-space:nowrap; }
td.id { font-family:ui-monospace,SFMono-Regular,Menlo,monospace; font-size:13px; white-space:nowrap; }
.meta td:first-child { color:var(--muted); width:220px; }
.align { display:flex; flex-wrap:wrap; gap:3px; }
.w { display:inline-flex; flex-direction:column; padding:1px 5px; border-radius:5px; position:relative;
  border:1px solid transparent; }
.w .r, .w .h { white-space:pre; } .w .h { color:var(--muted); font-size:13.5px; }
.w.ok .h { visibility:hidden; }
.w.sub { background:var(--subbg); border-color:#f6c48f; } .w.sub .r { color:var(--sub); }
.w.sub .h { color:var(--ink); }
.w.del { background:var(--delbg); border-color:#f5b3ae; } .w.del .r { color:var(--del); text-decoration:line-through; }
.w.ins { background:var(--insbg); border-color:#a9c8f5; } .w.ins .h { color:var(--ins); font-weight:600; }
.op { position:absolute; top:-7px; right:-4px; font-size:9.5px; font-weight:700; color:#fff; border-radius:3px;
  padding:0 3px; line-height:13px; }
.sub .op { background:var(--sub); } .del .op { background:var(--del); } .ins .op { background:var(--ins); }
.legend { display:flex; gap:14px; align-items:center; color:var(--muted); font-size:13px; margin:6px 0 10px; }
.legend .w { flex-direction:row; }
.curves { display:grid; grid-template-columns:repeat(auto-fill,minmax(260px,1fr)); gap:12px; }
.curves figure { margin:0; background:var(--card); border:1px solid var(--line); border-radius:10px; padding:8px; }
.curves img { width:100%; height:auto; } .curves figcaption { color:var(--muted); font-size:13px; text-align:center; }
.better { color:#067647; font-weight:600; } .worse { color:var(--del); font-weight:600; }
.empty { color:var(--muted); font-style:italic; }
.confusions { display:grid; grid-template-columns:repeat(auto-fill,minmax(250px,1fr)); gap:6px; }
.conf { background:var(--card); border:1px solid var(--line); border-left:4px solid var(--sub); border-radius:6px;
  padding:4px 10px; white-space:nowrap; overflow:hidden; text-overflow:ellipsis; }
.conf.del { border-left-color:var(--del); } .conf.ins { border-left-color:var(--ins); }
.conf .cnt { display:inline-block; min-width:34px; color:var(--muted); font-variant-numeric:tabular-nums; }
.conf.sub .r { color:var(--sub); } .conf.del .r { color:var(--del); text-decoration:line-through; }
.conf.ins .r { color:var(--ins); } .conf .k { color:var(--muted); font-size:12.5px; }
footer { color:var(--muted); font-size:12.5px; margin-top:30px; }
"""


def render(report: EvalReport) -> str:
    """The page, as one string."""
    e = html.escape
    data = report.to_dict(rows=False)
    normalized = report.normalized
    cards = [
        ("WER", report.wer.rate, report.ci95.get("wer"), f"{report.wer.errors} errors / {report.wer.reference_length}"
         " words"),
        ("CER", report.cer.rate, report.ci95.get("cer"), f"{report.cer.errors} errors / {report.cer.reference_length}"
         " characters"),
    ]
    if normalized:
        cards += [
            ("WER, normalized", normalized.wer.rate, normalized.ci95.get("wer"),
             f"{normalized.wer.errors} / {normalized.wer.reference_length} words"),
            ("CER, normalized", normalized.cer.rate, normalized.ci95.get("cer"),
             f"{normalized.cer.errors} / {normalized.cer.reference_length} characters"),
        ]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>espzoo evaluation: {e(Path(report.model).name or report.model)} on {e(Path(report.data).name)}"
        "</title>",
        f"<style>{STYLE}</style></head><body><main>",
        f"<h1>{e(Path(report.model).name or report.model)} on {e(Path(report.data).name or report.data)}</h1>",
        f'<p class="lead">{e(report.model)}{" @ " + e(report.commit) if report.commit else ""} · data {e(report.data)}'
        f" · {report.utterances} utterances · {report.audio_seconds:.1f} s of audio</p>",
        '<section class="cards">',
    ]
    for name, rate, ci, detail in cards:
        parts.append(
            f'<div class="card"><div class="k">{e(name)}</div><div class="v">{_percent(rate)}%</div>'
            f'<div class="c">{e(_interval(ci))}</div><div class="c">{e(detail)}</div></div>'
        )
    parts.append("</section>")

    how = "greedy CTC" if report.decode == "ctc-greedy" else (
        f"beam {report.beam_size}, ctc weight {report.ctc_weight:g}"
    )
    meta = [
        ("decoding", f"{how}, {report.jobs} job(s), real-time factor {report.real_time_factor:.2f}"),
        ("normalizer", normalized.normalizer if normalized else "none (--normalizer none)"),
        ("intervals", f"95% percentile bootstrap over {report.resampled}, {data['bootstrap']['resamples']} resamples, "
         f"seed {data['bootstrap']['seed']}"),
        ("error rate", "(substitutions + deletions + insertions) / reference words or characters, over the whole set"),
    ]
    if report.prompt:
        meta.append(("prompt", " ".join(report.prompt)))
    parts.append("<h2>Summary</h2><table class=\"meta\">")
    parts += [f"<tr><td>{e(k)}</td><td>{e(v)}</td></tr>" for k, v in meta]
    parts.append("</table>")

    if report.baseline:
        parts += _comparison(report.baseline)

    pairs = [(r.reference, r.hypothesis) for r in report.rows]
    from espzoo.decode.scores import text_normalizer

    normalize = None
    if normalized:
        kind = "english" if "English" in normalized.normalizer else "basic"
        normalize = text_normalizer(kind)
    top = confusions(pairs, normalize)
    parts.append(f"<h2>Most frequent word errors{' (normalized text)' if normalize else ''}</h2>")
    if top:
        parts.append('<div class="confusions">')
        arrow = {"S": "→", "D": "deleted", "I": "inserted"}
        for op, r, h, n in top:
            kind = {"S": "sub", "D": "del", "I": "ins"}[op]
            words_ = (f'<span class="r">{e(r)}</span> → <span class="h">{e(h)}</span>' if op == "S"
                      else f'<span class="r">{e(r or h)}</span> <span class="k">{arrow[op]}</span>')
            parts.append(f'<div class="conf {kind}"><span class="cnt">{n}×</span>{words_}</div>')
        parts.append("</div>")
    else:
        parts.append('<p class="empty">No errors.</p>')

    parts.append("<h2>Utterances, worst first</h2>")
    parts.append(
        '<div class="legend"><span class="w sub"><span class="r">S</span></span> substitution (reference above, '
        'hypothesis below) <span class="w del"><span class="r">D</span></span> deletion '
        '<span class="w ins"><span class="h">I</span></span> insertion</div>'
    )
    head = "<tr><th>#</th><th>id</th><th>words</th><th>errors</th><th>WER %</th>"
    head += "<th>norm. WER %</th>" if normalized else ""
    parts.append(f"<table class=\"utts\">{head}<th>reference / hypothesis</th></tr>")
    for k, row in enumerate(worst_first(report.rows), 1):
        cells = [f'<td class="n">{k}</td>', f'<td class="id">{e(row.id)}</td>',
                 f'<td class="n">{row.word.reference_length}</td>', f'<td class="n">{row.word.errors}</td>',
                 f'<td class="n">{_percent(row.word.rate)}</td>']
        if normalized:
            cells.append(f'<td class="n">{_percent(row.normalized[0].rate) if row.normalized else ""}</td>')
        cells.append(f'<td><div class="align">{_aligned(row)}</div></td>')
        parts.append(f'<tr id="utt-{e(row.id)}">{"".join(cells)}</tr>')
    parts.append("</table>")
    images = _curves(report)
    if images:
        parts.append("<h2>Training curves</h2><div class=\"curves\">")
        parts += [f'<figure><img alt="{e(name)}" src="{uri}"><figcaption>{e(name)}</figcaption></figure>'
                  for name, uri in images]
        parts.append("</div>")

    parts.append("<footer>Written by espzoo evaluate --report. Self-contained: it loads nothing from the network."
                 "</footer></main></body></html>")
    return "\n".join(parts) + "\n"


def _comparison(baseline: dict[str, Any]) -> list[str]:
    e = html.escape
    parts = [f"<h2>Against {e(str(baseline.get('a')))}</h2>",
             "<table><tr><th>metric</th><th>before</th><th>this model</th><th>difference</th>"
             "<th>95% CI of the difference</th></tr>"]
    for name in ("wer", "cer", "normalized_wer", "normalized_cer"):
        metric = baseline.get(name)
        if not isinstance(metric, dict):
            continue
        diff = metric.get("difference")
        ci = metric.get("ci95")
        verdict = ""
        if ci and ci[1] < 0:
            verdict = ' <span class="better">better</span>'
        elif ci and ci[0] > 0:
            verdict = ' <span class="worse">worse</span>'
        parts.append(
            f"<tr><td>{e(name.replace('_', ' ').upper())}</td><td class=\"n\">{_percent(metric.get('a'))}</td>"
            f"<td class=\"n\">{_percent(metric.get('b'))}</td>"
            f"<td class=\"n\">{'n/a' if diff is None else f'{100 * diff:+.2f}'}{verdict}</td>"
            f"<td class=\"n\">{'' if not ci else f'{100 * ci[0]:+.2f} to {100 * ci[1]:+.2f}'}</td></tr>"
        )
    parts.append("</table>")
    return parts
