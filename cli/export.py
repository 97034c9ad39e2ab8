"""Lay an experiment dir out as an ESPnet model repo for the Hugging Face Hub.

    espzoo export exp/bn_ft --out hub_repo/                          # README, meta.yaml, exp/..., data/token_list/...
    espzoo export exp/bn_ft --out hub_repo/ --repo-id me/bn_ft --language bn --dataset openslr53
    espzoo export exp/bn_ft --out hub_repo/ --overwrite --json       # {"path", "files": [...]}
    espzoo export exp/bn_lora --out hub_repo/ --adapter-only         # a --lora run: adapter.pth + adapter_config.yaml
    hf upload me/bn_ft hub_repo/                                     # then upload it with huggingface_hub's CLI

Results in the model card come from `espzoo evaluate exp/bn_ft --data ...` run before the export. The folder
loads with ESPnet alone (Speech2Text, from the folder), and with `espzoo pull` + `espzoo transcribe` once uploaded
or served by `espzoo mirror serve --root`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from espzoo.cli._options import JsonOpt
from espzoo.cli._output import info, print_json

OutArg = Annotated[Path, typer.Argument(help="The experiment dir (espzoo finetune --out).", show_default=False)]
DestOpt = Annotated[Path, typer.Option("--out", help="The folder to write the hub repo layout to.")]
RepoIdOpt = Annotated[
    str | None, typer.Option("--repo-id", help="Where it will be uploaded (for the card's examples).")
]
NameOpt = Annotated[str | None, typer.Option("--name", help="The exp/<name> folder (default: asr_<OUT's name>).")]
LanguageOpt = Annotated[str | None, typer.Option("--language", help="Language code for the card (e.g. bn).")]
DatasetOpt = Annotated[list[str] | None, typer.Option("--dataset", help="A dataset name for the card (repeatable).")]
LicenseOpt = Annotated[str, typer.Option("--license", help="The model's license, for the card.")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace a non-empty --out folder.")]
MergeOpt = Annotated[
    bool,
    typer.Option("--merge/--adapter-only", help="A --lora experiment: fold the adapters into a plain ESPnet model "
                 "(--merge), or write only adapter.pth + adapter_config.yaml naming the base repo@commit."),
]


def export(
    out_dir: OutArg,
    dest: DestOpt,
    repo_id: RepoIdOpt = None,
    name: NameOpt = None,
    language: LanguageOpt = None,
    dataset: DatasetOpt = None,
    license: LicenseOpt = "cc-by-4.0",
    overwrite: OverwriteOpt = False,
    merge: MergeOpt = True,
    json: JsonOpt = False,
) -> None:
    """Write an experiment as an ESPnet Hub repo folder. Example: espzoo export exp/bn_ft --out hub_repo/"""
    from espzoo.publish.hub_layout import ExportOptions
    from espzoo.publish.hub_layout import export as run_export

    options = ExportOptions(
        name=name, repo_id=repo_id, language=language, datasets=list(dataset or []), license=license,
        overwrite=overwrite, weights="merge" if merge else "adapter-only",
    )
    path = run_export(out_dir, dest, options)
    files = sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())
    if json:
        print_json({"path": str(path), "files": files})
        return
    for file in files:
        typer.echo(file)
    info(f"wrote {len(files)} files to {path}; upload with: hf upload {repo_id or 'ORG/NAME'} {path}")


def register(app: typer.Typer) -> None:
    app.command()(export)
