"""Options shared by several commands, declared once (as huggingface_hub's CLI does) and reused."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Annotated, Any

import typer

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of a table.")]
RepoArg = Annotated[str, typer.Argument(help="A hub repo id, optionally pinned: ORG/NAME[@REVISION].")]
LimitOpt = Annotated[int, typer.Option("--limit", "-n", help="Show at most N results (0 = all).")]
# Data sets: where --train/--valid/--data take a Kaldi dir, a manifest or a Hugging Face dataset.
DATA_HELP = ("A Kaldi data dir (wav.scp, text), a CSV/TSV/JSONL manifest, or a Hugging Face dataset: parquet files "
             "(folder or glob), a save_to_disk folder, or hf:ORG/NAME[:CONFIG][@REV]:SPLIT.")
AudioColumnOpt = Annotated[
    str | None, typer.Option("--audio-column", help="The data's audio column (default: audio, path, ...).")
]
TextColumnOpt = Annotated[
    str | None,
    typer.Option("--text-column", help="The data's transcript column (default: sentence, text, transcription, ...)."),
]
MaxParamsOpt = Annotated[
    str | None,
    typer.Option("--max-params", help="Leave out models known to be bigger: 400M, 1.5B (unknown sizes stay)."),
]

# Transfer options, shared by `espzoo plan` and `espzoo finetune` (ESPnet's --init_param semantics, made safe).
ModelArg = Annotated[
    str, typer.Argument(help="The pretrained model: repo id ORG/NAME[@REV], hub-layout folder or experiment dir.")
]
ExcludeOpt = Annotated[
    list[str] | None,
    typer.Option("--exclude", help="Do not load this module (at module boundaries: 'decoder', 'encoder.encoders.1').")
]
IncludeOpt = Annotated[list[str] | None, typer.Option("--include", help="Load only these modules (repeatable).")]
MapOpt = Annotated[
    str | None, typer.Option("--map", help="Load the source's module SRC into the model's module DST: SRC=DST.")
]
IgnoreMismatchOpt = Annotated[
    bool, typer.Option("--ignore-init-mismatch", help="Leave tensors whose shapes differ at their fresh init.")
]
FreezeOpt = Annotated[
    list[str] | None, typer.Option("--freeze", help="Do not train this module's parameters (ESPnet's --freeze_param).")
]
VocabOpt = Annotated[
    str,
    typer.Option(
        "--vocab",
        help="keep | char:TEXT | bpe:N[:TEXT] | unigram:N[:TEXT] | a token list | a bpe.model "
        "(TEXT: a Kaldi data dir, its text file, plain lines, or a Hugging Face dataset as --train takes it).",
    ),
]
NewRowsOpt = Annotated[
    str,
    typer.Option(
        "--new-rows",
        help="Rows of new tokens start as the mean of the pretrained rows of the old tokens that spell them "
        "(compose; the mean of all rows when nothing spells one), the mean of all rows (mean), or random.",
    ),
]
StatsOpt = Annotated[
    str, typer.Option("--stats", help="Normalization stats: keep the pretrained ones, or compute new ones (new).")
]
TransplantOpt = Annotated[
    bool,
    typer.Option(
        "--transplant/--no-transplant",
        help="Copy the rows of tokens both vocabularies share into the new CTC/decoder layers "
        "(--no-transplant: ESPnet's way, those layers start fresh; needs --ignore-init-mismatch).",
    ),
]
AllowUnusedOpt = Annotated[
    bool,
    typer.Option("--allow-unused", help="Fine-tune even though pretrained tensors have no place in the new model "
                 "(else refused; --exclude leaves them out on purpose)."),
]
InitParamOpt = Annotated[
    list[str] | None,
    typer.Option("--init-param", help="Another ESPnet spec SOURCE:SRC:DST:EXCLUDES, applied after MODEL (later wins)."),
]

LangOpt = Annotated[
    str | None,
    typer.Option(
        "--lang",
        help="S2T (OWSM) models: the data's language (ISO 639-3/639-1 or a name); one the model lacks gets a token.",
    ),
]
LangInitOpt = Annotated[
    str | None,
    typer.Option("--lang-init", help="S2T: a new language token starts from this language's rows (default: mean)."),
]
TargetLangOpt = Annotated[
    str | None,
    typer.Option("--target-lang", help="S2T: speech translation into this language (its task token <st_xxx>); "
                 "the data's text is then the translation."),
]
LoraOpt = Annotated[
    int | None,
    typer.Option("--lora", help="Train LoRA adapters of this rank on the frozen model instead of every weight."),
]
LoraAlphaOpt = Annotated[float | None, typer.Option("--lora-alpha", help="LoRA scaling alpha (default: the rank).")]
LoraDropoutOpt = Annotated[float, typer.Option("--lora-dropout", help="Dropout on the LoRA path's input.")]
LoraTargetsOpt = Annotated[
    str | None,
    typer.Option("--lora-targets", help="Linear layers to adapt, comma-separated module patterns "
                 "('encoder', 'linear_q,linear_v', 'decoder.*.src_attn'); default: attention and feed-forward."),
]
TrainAlsoOpt = Annotated[
    str | None,
    typer.Option("--train-also", help="With --lora, also train these modules fully, comma-separated (default: "
                 "what the transfer does not load unchanged, e.g. ctc.ctc_lo for a new vocabulary)."),
]


def _transfer_parameters(
    exclude: ExcludeOpt = None,
    include: IncludeOpt = None,
    map: MapOpt = None,
    ignore_init_mismatch: IgnoreMismatchOpt = False,
    freeze: FreezeOpt = None,
    vocab: VocabOpt = "keep",
    new_rows: NewRowsOpt = "compose",
    stats: StatsOpt = "pretrained",
    init_param: InitParamOpt = None,
    transplant: TransplantOpt = True,
    allow_unused: AllowUnusedOpt = False,
    lang: LangOpt = None,
    lang_init: LangInitOpt = None,
    target_lang: TargetLangOpt = None,
    lora: LoraOpt = None,
    lora_alpha: LoraAlphaOpt = None,
    lora_dropout: LoraDropoutOpt = 0.0,
    lora_targets: LoraTargetsOpt = None,
    train_also: TrainAlsoOpt = None,
) -> None:
    """The transfer options, declared once: `with_transfer_options` adds them to a command."""


def with_transfer_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Give `command` (which takes a `transfer` parameter) the transfer options of `espzoo plan`/`espzoo finetune`
    where `transfer` stands; they arrive parsed, as one `espzoo.transfer.TransferOptions`."""
    own = inspect.signature(command, eval_str=True)
    shared = inspect.signature(_transfer_parameters, eval_str=True).parameters
    params = list(own.parameters.values())
    at = [p.name for p in params].index("transfer")
    params = params[:at] + list(shared.values()) + params[at + 1:]

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        transfer = transfer_options(**{name: kwargs.pop(name) for name in shared})
        return command(*args, transfer=transfer, **kwargs)

    wrapper.__signature__ = own.replace(parameters=params)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in params} | {"return": own.return_annotation}
    del wrapper.__wrapped__  # typer reads the signature above, not the command's own
    return wrapper


def transfer_options(
    *,
    exclude: list[str] | None,
    include: list[str] | None,
    map: str | None,
    ignore_init_mismatch: bool,
    freeze: list[str] | None,
    vocab: str,
    new_rows: str,
    stats: str,
    init_param: list[str] | None,
    transplant: bool = True,
    allow_unused: bool = False,
    lang: str | None = None,
    lang_init: str | None = None,
    target_lang: str | None = None,
    lora: int | None = None,
    lora_alpha: float | None = None,
    lora_dropout: float = 0.0,
    lora_targets: str | None = None,
    train_also: str | None = None,
) -> Any:
    """The parsed transfer options as `espzoo.transfer.TransferOptions` (exits with one sentence on bad input)."""
    from espzoo.cli._output import fail
    from espzoo.transfer.plan import TransferOptions

    if new_rows not in ("compose", "mean", "random"):
        fail(f"--new-rows {new_rows!r} is not one of compose, mean, random.")
    if stats not in ("pretrained", "new"):
        fail(f"--stats {stats!r} is not one of pretrained, new.")
    pair = None
    if map is not None:
        src, sep, dst = map.partition("=")
        if not sep or not src.strip() or not dst.strip():
            fail(f"--map {map!r} is not SRC=DST; write e.g. --map encoder=encoder.")
        pair = (src.strip(), dst.strip())
    adapters = _lora_options(lora, lora_alpha, lora_dropout, lora_targets, train_also)
    return TransferOptions(
        excludes=tuple(exclude or ()),
        includes=tuple(include or ()),
        map=pair,
        init_params=tuple(init_param or ()),
        ignore_init_mismatch=ignore_init_mismatch,
        freeze=tuple(freeze or ()),
        vocab=vocab,
        new_rows=new_rows,  # type: ignore[arg-type]
        stats=stats,  # type: ignore[arg-type]
        transplant=transplant,
        allow_unused=allow_unused,
        lang=lang,
        lang_init=lang_init,
        target_lang=target_lang,
        lora=adapters,
    )


def _lora_options(
    rank: int | None, alpha: float | None, dropout: float, targets: str | None, train_also: str | None
) -> Any:
    from espzoo.cli._output import fail

    if rank is None:
        if alpha is not None or dropout or targets or train_also:
            fail("--lora-alpha, --lora-dropout, --lora-targets and --train-also need --lora RANK (e.g. --lora 8).")
        return None
    if rank < 1:
        fail(f"--lora {rank} is not a rank; give a positive integer such as 8.")
    if alpha is not None and alpha <= 0:
        fail(f"--lora-alpha {alpha} must be positive (the usual choice is the rank or twice it).")
    if not 0.0 <= dropout < 1.0:
        fail(f"--lora-dropout {dropout} must be in [0, 1).")
    from espzoo.lora.config import LoraOptions

    def split(text: str | None) -> tuple[str, ...]:
        return tuple(p.strip() for p in (text or "").split(",") if p.strip())

    return LoraOptions(rank, alpha, dropout, split(targets), split(train_also) if train_also is not None else None)

# `espzoo push`: where and how a model is uploaded (as `hf upload` names them).
PrivateOpt = Annotated[bool, typer.Option("--private", help="Create the repo private (an existing one keeps its own).")]
BranchOpt = Annotated[
    str | None, typer.Option("--revision", help="The branch to commit to (created from main if missing; default main).")
]
MessageOpt = Annotated[str | None, typer.Option("--message", "-m", help="The commit message.")]
TokenOpt = Annotated[
    str | None, typer.Option("--token", help="A token with write access (default: HF_TOKEN or `hf auth login`'s).")
]
