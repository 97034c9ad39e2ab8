"""Upload a fine-tuned model to the Hugging Face Hub (or an espzoo mirror) in one commit.

    espzoo push exp/bn_ft me/bn_ft                      # export the experiment, create the repo, upload, print the URL
    espzoo push hub_repo/ me/bn_ft --revision v2 -m "10 more epochs"   # an `espzoo export` folder, to branch v2
    espzoo push exp/bn_ft me/bn_ft --private --json     # {"repo_id", "revision", "commit", "commit_url", "files"}
    HF_ENDPOINT=http://mirror:8080 HF_TOKEN=T espzoo push exp/bn_ft me/bn_ft   # to `espzoo mirror serve --token T`

The token is HF_TOKEN, `--token` or the one `hf auth login` saved. The model card (README.md) is the one
`espzoo export` writes: results, how to use it, and its provenance (pretrained repo and commit, data, command).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from espzoo.cli._options import BranchOpt, JsonOpt, MessageOpt, PrivateOpt, TokenOpt
from espzoo.cli._output import info, print_json

SourceArg = Annotated[
    Path, typer.Argument(help="An experiment dir (espzoo finetune --out) or an espzoo export folder.",
                         show_default=False)
]
RepoIdArg = Annotated[str, typer.Argument(help="The repo to upload to: ORG/NAME.", show_default=False)]


def push(
    source: SourceArg,
    repo_id: RepoIdArg,
    private: PrivateOpt = False,
    revision: BranchOpt = None,
    message: MessageOpt = None,
    token: TokenOpt = None,
    json: JsonOpt = False,
) -> None:
    """Upload a model in one commit and print the commit URL. Example: espzoo push exp/bn_ft me/bn_ft"""
    from espzoo.publish.upload import PushOptions
    from espzoo.publish.upload import push as run_push

    pushed = run_push(source, PushOptions(repo_id=repo_id, private=private, revision=revision, message=message,
                                          token=token))
    if json:
        print_json(pushed.to_json())
        return
    typer.echo(pushed.commit_url)
    made = "exported and uploaded" if pushed.exported else "uploaded"
    info(f"{made} {len(pushed.files)} files to {pushed.repo_id}@{pushed.revision} (commit {pushed.commit[:12]}); "
         f"pull it with: espzoo pull {pushed.repo_id}@{pushed.revision}")


def register(app: typer.Typer) -> None:
    app.command()(push)
