"""Language models beside an ASR model (espzoo.models.lm): train one on the model's own tokens, set its decode weight.

    espzoo lm train exp/es_ft --text data/train            # ESPnet's lm_train on the model's tokens -> exp/es_ft/lm/
    espzoo lm train espnet/some_repo --text corpus.txt --out lm_es/   # an LM folder for a repo (--lm lm_es/)
    espzoo lm train exp/es_ft --text more.txt --init none  # from scratch even where the model ships an LM
    espzoo lm set-weight exp/es_ft 0.3                     # the weight evaluate/transcribe/export use by default
    espzoo evaluate exp/es_ft --data data/dev --lm-weight 0,0.1,0.3,0.5   # a sweep: one row per weight
    espzoo evaluate exp/es_ft --data data/test --lm none   # without the LM

TEXT is anything `--vocab` takes: a Kaldi data dir or its text file, plain lines, a manifest, a Hugging Face dataset.
Nothing here imports torch or ESPnet until a command runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from espzoo.cli._options import JsonOpt, TextColumnOpt
from espzoo.cli._output import info, print_json, print_table

LmOpt = Annotated[
    str | None,
    typer.Option("--lm", help="Language model to fuse in the beam search: a folder (an LM, an OUT with lm/, a model "
                 "folder whose meta.yaml names one) or none (default: the model's own LM when it has one)."),
]
LmWeightOpt = Annotated[
    str | None,
    typer.Option("--lm-weight", help="LM weight (default: the LM's own decode weight, else 0.3); evaluate takes a "
                 "list to sweep: 0,0.1,0.3,0.5."),
]

app = typer.Typer(help="Language models on the model's own tokens (ESPnet's LM task).", no_args_is_help=True)


@app.command("train")
def train(
    model: Annotated[str, typer.Argument(help="An experiment dir OUT, a hub-layout folder or a repo id.",
                                         show_default=False)],
    text: Annotated[Path, typer.Option("--text", help="The text: a Kaldi dir, a text file, a manifest or a Hugging "
                                       "Face dataset (as --vocab takes it).")],
    out: Annotated[Path | None, typer.Option("--out", help="The LM folder (default: OUT/lm for an experiment dir).")]
    = None,
    arch: Annotated[str, typer.Option("--arch", help="lstm or transformer.")] = "lstm",
    layers: Annotated[int | None, typer.Option("--layers", min=1, help="Layers (default 1 lstm, 2 transformer).")]
    = None,
    units: Annotated[int, typer.Option("--units", min=1, help="Hidden units.")] = 256,
    epochs: Annotated[int, typer.Option("--epochs", min=1, help="ESPnet's max_epoch.")] = 20,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Sentences per batch.")] = 16,
    lr: Annotated[float, typer.Option("--lr", min=0.0, help="Adam's learning rate.")] = 2e-3,
    valid_text: Annotated[Path | None, typer.Option("--valid-text", help="Validation text (default: every 10th "
                                                    "line of --text, held out).")] = None,
    init: Annotated[str, typer.Option("--init", help="auto (fine-tune the model's own LM when its tokens are the "
                                      "model's), none (from scratch) or an LM folder to fine-tune.")] = "auto",
    weight: Annotated[str | None, typer.Option("--weight", help="The decode weight to record (default 0.3).")] = None,
    text_column: TextColumnOpt = None,
    json: JsonOpt = False,
) -> None:
    """Train a token-level LM with ESPnet's LM task on the model's own tokens. Example: espzoo lm train exp/es_ft
    --text data/train"""
    from espzoo.models.lm import single_weight
    from espzoo.train.lm_train import LMTrainOptions, train_lm

    options = LMTrainOptions(arch=arch, layers=layers, units=units, max_epoch=epochs, batch_size=batch_size, lr=lr,
                             valid_text=str(valid_text) if valid_text else None, text_column=text_column, init=init,
                             weight=single_weight(weight))
    if not json:
        info("training the LM with ESPnet's lm_train")
    result = train_lm(model, text, out, options)
    if json:
        print_json(result.to_dict())
        return
    ppl = f"{result.perplexity:.2f}" if result.perplexity is not None else "n/a"
    start = f"fine-tuned from {result.init}" if result.init else "from scratch"
    info(f"LM {start}: {result.lines} lines, {result.tokens} tokens ({result.dropped} lines without a usable token "
         f"left out), {result.epochs} epochs, validation perplexity {ppl}, {result.seconds:.0f} s")
    info(f"wrote {result.path} (decode weight {result.weight:g}); evaluate and transcribe use it by default")


@app.command("set-weight")
def set_weight(
    model: Annotated[str, typer.Argument(help="An experiment dir with lm/, or an LM folder.", show_default=False)],
    weight: Annotated[str, typer.Argument(help="The LM weight to decode with by default.", show_default=False)],
) -> None:
    """Record the LM weight evaluate/transcribe/export use by default. Example: espzoo lm set-weight exp/es_ft 0.3"""
    from espzoo.models.lm import single_weight
    from espzoo.train.lm_train import set_weight as write_weight

    value = single_weight(weight)
    info(f"wrote {write_weight(model, float(value or 0.0))}")


def print_sweep(reports: list[Any], weights: tuple[float | None, ...], *, json: bool, rows: bool) -> None:
    """One row per LM weight: WER, CER (as written and normalized), decode seconds; the best WER marked."""
    best = min(range(len(reports)), key=lambda i: (reports[i].wer.rate, reports[i].cer.rate))
    if json:
        print_json({"sweep": [dict(r.to_dict(rows=rows), lm_weight=w) for r, w in zip(reports, weights, strict=True)],
                    "best": {"lm_weight": weights[best], "wer": reports[best].wer.rate}})
        return
    table = []
    for i, (report, weight) in enumerate(zip(reports, weights, strict=True)):
        norm = report.normalized
        table.append({"LM weight": f"{weight:g}", "WER %": _percent(report.wer.rate),
                      "CER %": _percent(report.cer.rate),
                      "WER norm %": _percent(norm.wer.rate) if norm else "", "decode s": f"{report.decode_seconds:.1f}",
                      "": "best" if i == best else ""})
    lm = next((r.lm for r in reports if r.lm), None)
    title = f"{reports[0].model} on {reports[0].data}: {reports[0].utterances} utterances"
    print_table(table, ["LM weight", "WER %", "CER %", "WER norm %", "decode s", ""], title=title)
    info(f"LM {lm['path'] if lm else '(none found: every row decoded without one)'}; keep the best with "
         f"`espzoo lm set-weight {reports[0].model} {weights[best]:g}`")


def _percent(rate: float) -> str:
    return "n/a" if rate == float("inf") else f"{100 * rate:.2f}"


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="lm")
