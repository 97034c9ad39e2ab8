"""Show what a transfer will load, rename, transplant, exclude or leave at init, without training anything.

    espzoo plan espnet/bn_openslr53                                  # everything loads: the collapsed table
    espzoo plan espnet/bn_openslr53 --vocab bpe:500:data/train/text  # a new vocabulary: shared-token rows kept
    espzoo plan exp/en_char --vocab char:data/train --exclude decoder --freeze encoder
    espzoo plan exp/en_char --vocab char:hf:google/fleurs:es_419:train   # TEXT: any data --train takes
    espzoo plan espnet/bn_openslr53 --map encoder=encoder --init-param other/model.pth:decoder:decoder
    espzoo plan espnet/bn_openslr53 --detail                         # one line per tensor
    espzoo plan espnet/bn_openslr53 --json                           # {"rows": [...], "summary": {...}}
    espzoo plan espnet/bn_openslr53 --lora 8 --lora-targets encoder  # adapters (new), what trains, its share

Every plan ends with how many parameters train (total, trainable, frozen, share; --freeze and --lora counted).

MODEL is a repo id (pulled through the HF cache), a hub-layout folder or an experiment dir. The excludes,
includes, --map and --init-param specs are ESPnet's `--init_param SOURCE:SRC:DST:EXCLUDES` at module boundaries.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from espzoo.cli._options import (
    JsonOpt,
    ModelArg,
    TextColumnOpt,
    with_transfer_options,
)
from espzoo.cli._output import info, print_json, print_table

DetailOpt = Annotated[bool, typer.Option("--detail", help="One row per tensor instead of one per module and action.")]


@with_transfer_options
def plan(model: ModelArg, transfer: Any = None, detail: DetailOpt = False, text_column: TextColumnOpt = None,
         json: JsonOpt = False) -> None:
    """Show the transfer plan for MODEL. Example: espzoo plan espnet/bn_openslr53 --vocab char:data/train"""
    from espzoo.transfer.plan import plan_transfer

    result = plan_transfer(model, transfer, text_column=text_column)  # --vocab char:DATASET: its transcript column
    data = result.to_json()
    if transfer.lora:
        from espzoo.lora.files import plan_adapters

        source = result.sources[0]
        data["adapters"] = plan_adapters(result, transfer.lora, base_repo=source.repo_id,
                                         base_commit=source.commit)[1].to_json()
        # With adapters, what trains is theirs to say (the base frozen, adapters and --train-also training).
        data["summary"]["parameters"] = {k: data["adapters"][k] for k in ("total", "trainable", "frozen", "share")}
    if json:
        print_json(data)
        return
    render(data, detail=detail)
    if "adapters" in data:
        render_adapters(data["adapters"], detail=detail)


def render_adapters(adapters: dict[str, Any], *, detail: bool = False) -> None:
    """--lora: the new adapter tensors (every one with --detail, else per module), then what trains."""
    tensors = adapters["adapter_tensors"]
    if detail:
        rows = [{"target_key": k, "action": "new (LoRA)", "shape": "x".join(map(str, v)), "trains": "yes"}
                for k, v in tensors.items()]
        print_table(rows, ["target_key", "action", "shape", "trains"], title="LoRA adapters (new, trainable)")
    else:
        groups: dict[str, dict[str, Any]] = {}
        for key, shape in tensors.items():
            group = groups.setdefault(key.split(".")[0], {"module": key.split(".")[0], "action": "new (LoRA)",
                                                          "tensors": 0, "values": 0})
            group["tensors"] += 1
            group["values"] += _numel(shape)
        rows = [{**g, "parameters": f"{g['values']:,}"} for g in groups.values()]
        print_table(rows, ["module", "action", "tensors", "parameters"],
                    title=f"LoRA adapters (new, trainable) on {len(adapters['targets'])} Linear layers")
    also = adapters["train_also"]
    info(f"trains fully beside the adapters: {_modules(also) if also else 'nothing (--train-also)'}")
    _trainable(adapters)


def _trainable(counts: dict[str, Any]) -> None:
    info(f"trainable {counts['trainable']:,} of {counts['total']:,} parameters ({counts['share']:.2%}); "
         f"frozen {counts['frozen']:,}")


def _modules(keys: list[str]) -> str:
    """Tensor names shortened to their modules (ctc.ctc_lo.weight, ctc.ctc_lo.bias -> ctc.ctc_lo)."""
    return ", ".join(dict.fromkeys(k.rsplit(".", 1)[0] for k in keys))


def render(plan: dict[str, Any], *, detail: bool = False) -> None:
    """The plan for people: per module and action (or per tensor with `detail`), then the vocabulary and stats."""
    summary = plan["summary"]
    if detail:
        rows = [
            {
                **row,
                "source_key": "" if row["source_key"] in (None, row["target_key"]) else row["source_key"],
                "shapes": _shapes(row),
                "frozen": "frozen" if row.get("frozen") else "",
            }
            for row in plan["rows"]
        ]
        columns = ["target_key", "action", "source_key", "shapes", "frozen", "note"]
        print_table(rows, columns, title="transfer plan (every tensor)", optional=["note", "source_key", "frozen"])
    else:
        print_table(_collapsed(plan["rows"]), ["module", "action", "tensors", "parameters", "frozen", "note"],
                    title="transfer plan (--detail: every tensor)", optional=["frozen"])
    totals = ", ".join(f"{a} {v['tensors']} ({v['parameters']:,} values)" for a, v in summary["actions"].items())
    info(f"total: {totals}")
    for i, spec in enumerate(summary["specs"]):
        pinned = f" = {spec['repo_id']}@{spec['commit'][:12]}" if spec.get("repo_id") and spec.get("commit") else ""
        info(f"spec {i + 1}: {spec['spec']}{pinned}")
    vocab = summary.get("vocabulary")
    if vocab:
        parts = [f"{vocab['source']} ({vocab['token_type']}, {vocab['size']} tokens)"]
        if vocab["new_in_old"] is not None:
            parts.append(f"{vocab['new_in_old']:.0%} of its tokens in the pretrained vocabulary")
        if vocab["text_coverage"] is not None:
            parts.append(f"{vocab['text_coverage']:.0%} of the text's tokens shared")
        info(f"vocabulary: {', '.join(parts)}")
    if summary.get("new_tokens"):
        info(f"new tokens' rows: {_new_token_inits(summary['new_tokens'])} (--json: each token)")
    language = summary.get("language")
    if language:  # an S2T model: the prompt, and a language token of its own when the model lacked it
        prompt = f"; prompt {''.join(language['prompt'])}" if language["prompt"] else ""
        info(f"language: {language['describe']}{prompt}")
        if language.get("extension"):
            info(f"vocabulary extension: {language['extension']['describe']}")
    info("normalization stats: the pretrained model's (GlobalMVN buffers load)" if summary["stats"] == "pretrained"
         else "normalization stats: new, computed on your data (normalize.* excluded)")
    for note in summary.get("notes") or ():
        info(f"config: {note}")
    legacy = summary.get("legacy_names") or 0
    if legacy:
        info(f"legacy names: {legacy} tensor(s) saved by an older ESPnet under another name load where the installed "
             "ESPnet's own loader puts them (--detail: each one)")
    for index, keys in (summary.get("unused_source") or {}).items():
        shown = ", ".join(keys[:20]) + (f" and {len(keys) - 20} more (--json: all)" if len(keys) > 20 else "")
        info(f"spec {int(index) + 1}: {len(keys)} source tensor(s) have no place in the new model and are not used: "
             f"{shown}" + ("; finetune refuses this unless they are excluded (--exclude) or --allow-unused is given"
                           if index == "0" else ""))
    if summary["frozen"]["tensors"]:
        info(f"frozen: {', '.join(summary['frozen']['modules'])} ({summary['frozen']['parameters']:,} parameters)")
    if "adapters" not in plan:  # with --lora, render_adapters says it after the adapters
        _trainable(summary["parameters"])


_INITS = {
    "compose": "the mean of the pretrained rows of the old tokens that spell it",
    "language": "the mean of the chosen language rows",
    "mean": "the mean of all pretrained rows",
    "random": "random",
}


def _new_token_inits(counts: dict[str, int]) -> str:
    return "; ".join(f"{n} {_INITS.get(init, init)}" for init, n in counts.items())


def _collapsed(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        module = row["target_key"].split(".")[0]
        group = groups.setdefault(
            (module, row["action"]),
            {"module": module, "action": row["action"], "tensors": 0, "values": 0, "frozen": 0, "notes": {}},
        )
        group["tensors"] += 1
        group["values"] += _numel(row["target_shape"])
        group["frozen"] += bool(row.get("frozen"))
        if row.get("note"):
            group["notes"][row["note"]] = None
    return [
        {
            **g,
            "parameters": f"{g['values']:,}",
            "frozen": "all" if g["frozen"] == g["tensors"] else (g["frozen"] or ""),
            "note": "; ".join(list(g["notes"])[:2]),
        }
        for g in groups.values()
    ]


def _shapes(row: dict[str, Any]) -> str:
    target = "x".join(map(str, row["target_shape"])) or "scalar"
    if row["source_shape"] is None or row["source_shape"] == row["target_shape"]:
        return target
    return "x".join(map(str, row["source_shape"])) + " -> " + target


def _numel(shape: list[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def register(app: typer.Typer) -> None:
    app.command("plan")(plan)
