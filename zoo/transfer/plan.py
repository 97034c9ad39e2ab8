"""Transfer learning plans: ESPnet's `--init_param` specs made safe and readable, plus vocabulary adaptation.

A spec is ESPnet's string `SOURCE:SRC:DST:EXCLUDES` (espnet2/torch_utils/load_pretrained_model.py), read the
way an ESPnet user means it, with ESPnet's traps fixed:

- prefixes match at module boundaries (`encoder.encoders.1` is not `encoder.encoders.10`);
- an empty exclude excludes nothing (ESPnet's `m.pth:::` loads nothing, silently);
- an exclude, SRC or DST that matches no key is an error naming the closest module names;
- SOURCE may contain `:` (the longest existing path wins), or be a repo id `org/name[@rev]`.

`make_plan` gives one row per tensor of the target model (action `load`, `rename`, `transplant`, `exclude`,
`mismatch` or `init`); several specs may feed one plan, later specs winning where they overlap, as ESPnet
applies its `--init_param` list in order. `apply_plan` writes the adapted checkpoint: every tensor of the new
model in its shape (the planned ones from the sources, the rest from ESPnet's own fresh initialization of the
new model), so ESPnet loads it with `strict=True` and nothing is left at random silently; and the adapted config.

For every vocabulary-sized tensor (found in the built model: CTC output, also under PIT-CTC; decoder embedding and
output; a transducer's joint output; self-conditioning) a new vocabulary keeps the pretrained row of every token
both vocabularies share, including the `<mask>` row a mask-CTC decoder adds; a new token starts from the mean
of the pretrained rows of the old tokens that spell it (`new_rows="compose"`, vocab.compose_map), else from
the mean of all rows (`mean`) or at random (`random`). Keys that name one shared tensor
(PIT-CTC's criterion holds the model's own CTC) share one fate in the plan, as they do after ESPnet's load.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from espzoo.errors import TransferError
from espzoo.models.build import TargetModel, describe_target, unknown_options
from espzoo.tasks import task_of
from espzoo.transfer.s2t_vocab import s2t_vocabulary
from espzoo.transfer.sources import Source, load_checkpoint, open_source
from espzoo.transfer.spec import NORMALIZE_PREFIX, TransferSpec, _no_match, parse_spec, under
from espzoo.transfer.vocab import Vocabulary, build_vocabulary, compose_map, token_map

Action = Literal["load", "rename", "transplant", "exclude", "mismatch", "init"]


ACTIONS: tuple[Action, ...] = ("load", "rename", "transplant", "exclude", "mismatch", "init")


LOADED: frozenset[str] = frozenset({"load", "rename", "transplant"})


NewRows = Literal["compose", "mean", "random"]


NEW_ROWS: tuple[NewRows, ...] = ("compose", "mean", "random")


Stats = Literal["pretrained", "new"]


@dataclass
class PlanRow:
    target_key: str
    action: Action
    target_shape: tuple[int, ...]
    source_key: str | None = None
    source_shape: tuple[int, ...] | None = None
    spec: int | None = None  # index of the spec that supplies (or excludes) it
    overrides: list[int] = field(default_factory=list)  # earlier specs this one replaces
    frozen: bool = False
    note: str = ""
    # The name the source tensor has in the target model before its loader renames it (a name saved by an older
    # ESPnet release, which the installed one renames on load): the model is saved under it again (saved_names).
    legacy_key: str | None = None

    @property
    def module(self) -> str:
        return self.target_key.split(".")[0]

    @property
    def numel(self) -> int:
        n = 1
        for d in self.target_shape:
            n *= d
        return n

    def to_json(self) -> dict[str, Any]:
        row: dict[str, Any] = {
            "target_key": self.target_key,
            "action": self.action,
            "source_key": self.source_key,
            "source_shape": list(self.source_shape) if self.source_shape is not None else None,
            "target_shape": list(self.target_shape),
            "spec": self.spec,
        }
        if self.overrides:
            row["overrides"] = self.overrides
        if self.frozen:
            row["frozen"] = True
        if self.note:
            row["note"] = self.note
        if self.legacy_key:
            row["legacy_key"] = self.legacy_key
        return row


@dataclass
class TransferPlan:
    """One row per tensor of the new model, and how each spec fed it.

    JSON (`to_json`): {"rows": [{target_key, action, source_key, source_shape, target_shape, spec, [overrides],
    [frozen], [note]}], "summary": {actions, modules, frozen, specs, stats, new_rows, new_tokens, ignore_init_mismatch,
    transplant, vocabulary, unused_source_tensors, unused_source, legacy_names, notes, language, parameters},
    "new_tokens": [{token, index, init, from}]}; a row loaded under a name the installed ESPnet renames on load
    (saved by an older release) carries `legacy_key`; `unused_source` lists, per spec, the source tensors that have
    no place in the new model and were not excluded.
    `spec` and `overrides` index `summary.specs` (0-based); `summary.new_tokens` counts the new tokens by how their
    rows start (`init`: compose, language, mean, random), `new_tokens` lists each with the old tokens it starts
    `from`; `parameters` = {total, trainable, frozen, share} (values, not tensors).
    """

    rows: list[PlanRow]
    specs: list[TransferSpec]
    sources: list[Source]
    target_config: dict[str, Any]
    vocabulary: Vocabulary | None
    new_rows: NewRows = "compose"
    stats: Stats = "pretrained"
    freeze: tuple[str, ...] = ()
    ignore_init_mismatch: bool = False
    transplant: bool = True  # False: vocabulary-sized tensors of another size are mismatches, as in ESPnet
    # Per spec: new token index -> pretrained token index (over the models' token lists, `<mask>` and big blanks
    # included), for the vocabulary-sized tensors it transplants; a tensor with fewer rows uses the map's prefix.
    row_maps: dict[int, dict[int, int]] = field(default_factory=dict)
    vocab_axes: dict[str, int] = field(default_factory=dict)  # the target model's vocabulary-sized tensors
    aliases: dict[str, str] = field(default_factory=dict)  # target keys naming the tensor of an earlier key
    unused_source: dict[int, list[str]] = field(default_factory=dict)
    unused_modules: dict[int, list[str]] = field(default_factory=dict)  # the outermost modules holding only those
    notes: list[str] = field(default_factory=list)  # changes to the pretrained config the installed ESPnet needs
    language: Any = None  # an S2T model's espzoo.models.s2t.LanguagePlan (prompt; the new language token, if any)
    token_list: list[str] = field(default_factory=list)  # the target model's (as the built model uses it)
    parameters: frozenset[str] = frozenset()  # the target keys that are parameters (the rest are buffers)

    def by_key(self) -> dict[str, PlanRow]:
        return {row.target_key: row for row in self.rows}

    def summary(self) -> dict[str, Any]:
        def tally(rows: Iterable[PlanRow]) -> dict[str, dict[str, int]]:
            out: dict[str, dict[str, int]] = {}
            for row in rows:
                entry = out.setdefault(row.action, {"tensors": 0, "parameters": 0})
                entry["tensors"] += 1
                entry["parameters"] += row.numel
            return {a: out[a] for a in ACTIONS if a in out}

        modules: dict[str, list[PlanRow]] = {}
        for row in self.rows:
            modules.setdefault(row.module, []).append(row)
        frozen = [r for r in self.rows if r.frozen]
        return {
            "actions": tally(self.rows),
            "modules": {name: tally(rows) for name, rows in modules.items()},
            "frozen": {
                "tensors": len(frozen),
                "parameters": sum(r.numel for r in frozen),
                "modules": list(self.freeze),
            },
            "specs": [
                {"spec": str(s), "source": str(src.checkpoint), "repo_id": src.repo_id, "commit": src.commit}
                for s, src in zip(self.specs, self.sources, strict=True)
            ],
            "stats": self.stats,
            "new_rows": self.new_rows,
            "new_tokens": _count_inits(self.new_tokens()),
            "ignore_init_mismatch": self.ignore_init_mismatch,
            "transplant": self.transplant,
            "vocabulary": self.vocabulary.overlap() if self.vocabulary else None,
            "unused_source_tensors": {str(i): len(keys) for i, keys in self.unused_source.items() if keys},
            "unused_source": {str(i): keys for i, keys in self.unused_source.items() if keys},
            "legacy_names": len(self.saved_names()),
            "notes": list(self.notes),
            "language": _language_summary(self.language),
            "parameters": self.parameter_counts(),
        }

    def saved_names(self) -> dict[str, str]:
        """{the target model's key: the name it had in the pretrained checkpoint}, for the tensors the installed
        ESPnet's loader renamed (names of an older release). The fine-tuned model is saved under those names, so
        that every ESPnet release that loaded the pretrained model loads it (espzoo.train.asr_train)."""
        return {row.target_key: row.legacy_key for row in self.rows if row.legacy_key and row.action in LOADED}

    def parameter_counts(self) -> dict[str, Any]:
        """How many parameter values the model has and how many train (--freeze taken into account; a tensor
        two modules share counts once, buffers never): total, trainable, frozen, share (trainable / total)."""
        rows = [r for r in self.rows if r.target_key in self.parameters and r.target_key not in self.aliases]
        total = sum(r.numel for r in rows)
        frozen = sum(r.numel for r in rows if r.frozen)
        return {"total": total, "trainable": total - frozen, "frozen": frozen,
                "share": (total - frozen) / total if total else 0.0}

    def to_json(self) -> dict[str, Any]:
        rows = [row.to_json() for row in self.rows]
        return {"rows": rows, "summary": self.summary(), "new_tokens": self.new_tokens()}

    def new_tokens(self) -> list[dict[str, Any]]:
        """How each token the pretrained model lacks starts in the transplanted tensors: `compose` (the mean of
        the rows of the old tokens `from`, which spell it), `language` (an S2T language token: the rows of the
        languages `from`), else the fallback `new_rows` gives (`mean` for compose: nothing spelled it)."""
        if 0 not in self.row_maps or not self.token_list:
            return []
        old = self.sources[0].token_list or []
        row_map = self.row_maps[0]
        language = getattr(getattr(self.language, "new", None), "index", None)
        fallback = "random" if self.new_rows == "random" else "mean"
        out = []
        for index, token in enumerate(self.token_list):
            source = row_map.get(index)
            if isinstance(source, int):
                continue  # shared: its own pretrained row
            init = fallback if source is None else "language" if index == language else "compose"
            spelled = [old[i] for i in source] if source is not None else []
            out.append({"token": token, "index": index, "init": init, "from": spelled})
        return out


def _count_inits(tokens: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for token in tokens:
        counts[token["init"]] = counts.get(token["init"], 0) + 1
    return counts


def _language_summary(language: Any) -> dict[str, Any] | None:
    return language.summary() if language is not None else None


def make_plan(
    specs: Sequence[TransferSpec],
    target_config: dict[str, Any],
    *,
    vocabulary: Vocabulary | None = None,
    ignore_init_mismatch: bool = False,
    freeze: Sequence[str] = (),
    new_rows: NewRows = "compose",
    stats: Stats = "pretrained",
    sources: Sequence[Source] | None = None,
    transplant: bool = True,
) -> TransferPlan:
    """Plan how the model `target_config` describes gets its initial values from `specs` (later specs win).

    Raises TransferError for an exclude/SRC/DST/freeze that matches nothing, and for shape mismatches unless
    `ignore_init_mismatch` (as ESPnet does; vocabulary-sized tensors are transplanted, not mismatched).
    `transplant=False` plans them as ESPnet's loader treats them: a vocabulary of another size is a `mismatch`
    (with `ignore_init_mismatch`, the new model's fresh initialization), one of the same size loads as it is.
    """
    if not specs:
        raise TransferError("A transfer plan needs at least one spec (the pretrained model).")
    if new_rows not in NEW_ROWS:
        raise TransferError(f"new_rows must be one of {', '.join(NEW_ROWS)}, not {new_rows!r}.")
    if stats not in ("pretrained", "new"):
        raise TransferError(f"stats must be 'pretrained' or 'new', not {stats!r}.")
    sources = list(sources) if sources is not None else [open_source(spec.source) for spec in specs]
    target = describe_target(target_config, reference=_shapes_of(sources[0].checkpoint))
    plan = TransferPlan(
        rows=[PlanRow(key, "init", shape) for key, shape in target.shapes.items()],
        specs=list(specs),
        sources=sources,
        target_config=target_config,
        vocabulary=vocabulary,
        new_rows=new_rows,
        stats=stats,
        freeze=tuple(freeze),
        ignore_init_mismatch=ignore_init_mismatch,
        transplant=transplant,
        vocab_axes=dict(target.vocab_axes),
        aliases=dict(target.aliases),
        token_list=list(target.token_list),
        parameters=target.parameters,
    )
    rows = plan.by_key()
    for index, (spec, source) in enumerate(zip(specs, sources, strict=True)):
        state = load_checkpoint(source.checkpoint)
        shapes = {key: tuple(value.shape) for key, value in state.items()}
        del state  # only shapes are needed here; apply_plan reads the values
        _plan_spec(plan, rows, index, spec, source, shapes, target)
    _share_aliases(rows, target)
    if stats == "new":
        for row in plan.rows:
            if under(row.target_key, NORMALIZE_PREFIX):
                row.action, row.note = "exclude", "--stats new: the new data's normalization stats"
    _mark_frozen(plan, target)
    _check_upstreams(plan)
    mismatched = [r for r in plan.rows if r.action == "mismatch"]
    if mismatched and not ignore_init_mismatch:
        listed = "; ".join(f"{r.target_key} {r.source_shape} -> {r.target_shape}" for r in mismatched[:4])
        more = f" and {len(mismatched) - 4} more" if len(mismatched) > 4 else ""
        raise TransferError(
            f"{len(mismatched)} tensors differ in shape ({listed}{more}); exclude them or pass --ignore-init-mismatch."
        )
    return plan


def _plan_spec(
    plan: TransferPlan,
    rows: dict[str, PlanRow],
    index: int,
    spec: TransferSpec,
    source: Source,
    source_shapes: dict[str, tuple[int, ...]],
    target: TargetModel,
) -> None:
    name = f"spec {index + 1} ({spec})"
    for exclude in spec.excludes:
        if not any(under(k, exclude) for k in source_shapes):
            raise _no_match(f"In {name}, the exclude", exclude, source_shapes)
    for include in spec.includes:
        if not any(under(k, include) for k in source_shapes):
            raise _no_match(f"In {name}, the include", include, source_shapes)
    if spec.src and not any(under(k, spec.src) for k in source_shapes):
        raise _no_match(f"In {name}, SRC", spec.src, source_shapes)
    if spec.dst and not any(under(k, spec.dst) for k in target.shapes):
        raise _no_match(f"In {name}, DST", spec.dst, target.shapes)

    row_map = _row_map(source, target, plan.new_rows) if plan.transplant else None
    named: dict[str, tuple[str, tuple[int, ...]]] = {}  # its name in the target model -> (source key, shape)
    for source_key, source_shape in source_shapes.items():
        if spec.src:
            if not under(source_key, spec.src):
                continue
            rest = source_key[len(spec.src) + 1 :]
        else:
            rest = source_key
        named[".".join(p for p in (spec.dst, rest) if p)] = (source_key, source_shape)
    # Names the target model's own loader renames (older ESPnet releases saved them): where load_state_dict puts them.
    loaded_as = target.renames({name: shape for name, (_, shape) in named.items()})
    unused: list[str] = []
    for name, (source_key, source_shape) in named.items():
        target_key = loaded_as.get(name, name)
        if target_key is None:  # the model's own loader discards it (a buffer older releases saved)
            continue
        excluded_by = next((e for e in spec.excludes if under(source_key, e)), None)
        if excluded_by is None and spec.includes and not any(under(source_key, i) for i in spec.includes):
            excluded_by = "not under --include " + ",".join(spec.includes)
        row = rows.get(target_key)
        if row is None:
            if excluded_by is None:  # left out on purpose is not unused
                unused.append(source_key)
            continue
        axis = target.vocab_axes.get(target_key)
        outcome, note = _outcome(source_shape, row.target_shape, axis, row_map, excluded_by)
        legacy = name if name != target_key else None
        if legacy is not None:
            note = "; ".join(n for n in (f"legacy name {legacy}", note) if n)
        if outcome in LOADED:
            if outcome == "load" and source_key != name:
                outcome = "rename"
            if row.action in LOADED and row.spec is not None:
                row.overrides = [*row.overrides, row.spec]
            row.action, row.source_key, row.source_shape, row.spec, row.note, row.legacy_key = (
                outcome, source_key, source_shape, index, note, legacy,
            )
        elif row.action not in LOADED:
            # An exclude or a mismatch in a later spec leaves what an earlier spec loaded (as in ESPnet).
            row.action, row.source_key, row.source_shape, row.spec, row.note, row.legacy_key = (
                outcome, source_key, source_shape, index, note, legacy,
            )
    if any(rows[k].action == "transplant" and rows[k].spec == index for k in rows):
        plan.row_maps[index] = row_map or {}
    plan.unused_source[index] = unused
    plan.unused_modules[index] = smallest_modules(unused, source_shapes)


def _check_upstreams(plan: TransferPlan) -> None:
    """An upstream (SSL front end, Whisper) is built at random, never downloaded: its weights must come from a
    checkpoint. A recipe that froze the upstream and did not save it is the one case that needs the original."""
    from espzoo.models.upstreams import upstream_modules

    for module, what in upstream_modules(plan.target_config).items():
        fresh = [r for r in plan.rows if under(r.target_key, module) and r.action == "init"]
        if fresh:
            raise TransferError(
                f"The checkpoint lacks the {what}'s weights ({len(fresh)} tensors under {module}, e.g. "
                f"{fresh[0].target_key}), so it would start at random; add a checkpoint that holds them with "
                "--init-param PATH:SRC:DST."
            )


def _shapes_of(checkpoint: Path) -> dict[str, tuple[int, ...]]:
    return {key: tuple(value.shape) for key, value in load_checkpoint(checkpoint).items()}


def _share_aliases(rows: dict[str, PlanRow], target: TargetModel) -> None:
    """Keys naming one tensor (PIT-CTC's `pit_ctc.criterion_fn.ctc_lo` is the model's `ctc.ctc_lo`) start from
    one value: what the first key gets, or else what a later one loads. Planned apart, the last key in the
    checkpoint would silently overwrite the first one during ESPnet's load."""
    groups: dict[str, list[str]] = {}
    for key, first in target.aliases.items():
        groups.setdefault(first, [first]).append(key)
    for keys in groups.values():
        members = [rows[k] for k in keys if k in rows]
        decider = next((r for r in members if r.action in LOADED), members[0])
        for row in members:
            if row is decider:
                continue
            row.action, row.source_key, row.source_shape, row.spec = (
                decider.action, decider.source_key, decider.source_shape, decider.spec,
            )
            row.note = f"the same tensor as {decider.target_key}" + (f"; {decider.note}" if decider.note else "")


def _row_map(source: Source, target: TargetModel, new_rows: NewRows) -> dict[int, int | tuple[int, ...]] | None:
    """New token index -> pretrained token index (a shared token), when the source's token list is known and
    differs; with `compose`, also new token index -> the pretrained indices of the old tokens that spell it."""
    old_tokens = source.token_list
    if old_tokens is None or old_tokens == target.token_list:
        return None
    row_map: dict[int, int | tuple[int, ...]] = {
        new: old for old, new in token_map(old_tokens, target.token_list).items()
    }
    if new_rows == "compose":
        old = source.vocabulary()
        old.tokens = list(old_tokens)  # the model's own list (a mask-CTC `<mask>`, big blanks): its row indices
        row_map.update(compose_map(old, target.token_list, known=row_map))
    return row_map


def _outcome(
    source_shape: tuple[int, ...],
    target_shape: tuple[int, ...],
    axis: int | None,
    row_map: dict[int, int] | None,
    excluded_by: str | None,
) -> tuple[Action, str]:
    if excluded_by is not None:
        return "exclude", excluded_by if excluded_by.startswith("not under") else f"excluded by {excluded_by!r}"
    if axis is not None and row_map is not None and len(source_shape) == len(target_shape) > axis:
        pairs = enumerate(zip(source_shape, target_shape, strict=True))
        same_elsewhere = all(s == t for i, (s, t) in pairs if i != axis)
        if same_elsewhere:
            rows = rows_for(row_map, source_shape[axis], target_shape[axis])
            shared = sum(isinstance(old, int) for old in rows.values())
            composed = f", {len(rows) - shared} composed from the rows that spell them" if len(rows) > shared else ""
            return "transplant", f"{shared}/{target_shape[axis]} token rows from the pretrained model{composed}"
    if source_shape == target_shape:
        return "load", ""
    return "mismatch", "shape differs"


def rows_for(
    row_map: dict[int, int | tuple[int, ...]], old_rows: int, new_rows: int
) -> dict[int, int | tuple[int, ...]]:
    """The part of a token map that a tensor with `old_rows` pretrained and `new_rows` new rows uses (a mask-CTC
    CTC layer lacks the decoder's trailing `<mask>` row; the token lists are otherwise the same prefix). A new row
    may come from several old rows (their mean: an S2T language or extension piece, espzoo.models.s2t)."""

    def within(old: int | tuple[int, ...]) -> bool:
        return all(o < old_rows for o in old) if isinstance(old, tuple) else old < old_rows

    return {new: old for new, old in row_map.items() if new < new_rows and within(old)}


def _mark_frozen(plan: TransferPlan, target: TargetModel) -> None:
    """ESPnet's --freeze_param at module boundaries: parameters (not buffers) under each module stop training."""
    for module in plan.freeze:
        matched = [r for r in plan.rows if under(r.target_key, module)]
        if not matched:
            raise _no_match("--freeze", module, target.shapes)
        for row in matched:
            row.frozen = row.target_key in target.parameters  # a module of buffers only (frontend) has none


@dataclass(frozen=True)
class TransferOptions:
    """What `espzoo plan` / `espzoo finetune` take on the command line, as data."""

    excludes: tuple[str, ...] = ()
    includes: tuple[str, ...] = ()
    map: tuple[str, str] | None = None  # --map SRC=DST
    init_params: tuple[str, ...] = ()  # further ESPnet specs, applied after the model's own
    ignore_init_mismatch: bool = False
    freeze: tuple[str, ...] = ()
    vocab: str = "keep"
    lang: str | None = None  # S2T (OWSM) models: the data's language (a new one gets its own token)
    lang_init: str | None = None  # S2T: the language whose rows start a new language token (default: their mean)
    target_lang: str | None = None  # S2T: translate the speech into this language (task token <st_xxx>)
    transplant: bool = True  # False: no row transplant (ESPnet's way; needs ignore_init_mismatch for a new size)
    new_rows: NewRows = "compose"
    stats: Stats = "pretrained"
    lora: Any = None  # espzoo.lora.LoraOptions: train LoRA adapters (planned by espzoo.lora.plan_adapters)
    allow_unused: bool = False  # finetune even though pretrained tensors have no place in the new model


def plan_transfer(
    model: str,
    options: TransferOptions = TransferOptions(),
    *,
    texts: Sequence[str] | None = None,
    workdir: Path | None = None,
    text_column: str | None = None,
) -> TransferPlan:
    """Plan the transfer from `model` (repo id, hub-layout folder, experiment dir) to the same architecture
    with the vocabulary `options.vocab` asks for. `texts` are the training transcripts (for `bpe:N` without a
    file and for the coverage report); a trained sentencepiece model goes to `workdir`; `text_column` names the
    transcript column of a dataset the vocabulary spec names (as --text-column does for --train)."""
    source = open_source(model)
    if source.config is None:
        raise TransferError(f"{model} has no config.yaml beside its checkpoint; give a model folder or repo id.")
    token_type = str(source.config.get("token_type") or "")
    if token_type.startswith("whisper") and options.vocab != "keep":
        raise TransferError(
            f"{model} uses Whisper's own tokenizer ({token_type}), whose vocabulary is fixed; "
            "a new vocabulary is not supported for it, use --vocab keep."
        )
    old = source.vocabulary()
    if token_type.startswith("whisper"):
        texts = None  # the coverage report would need Whisper's tokenizer; the vocabulary is kept as it is
    row_init: dict[int, tuple[int, ...]] = {}
    language = None
    if task_of(source.config).prompted:  # OWSM: the vocabulary stays; a new language adds its token
        vocabulary, row_init, language = s2t_vocabulary(
            old, options.vocab, options.lang, options.lang_init, workdir, texts, options.target_lang, text_column
        )
    elif options.lang or options.lang_init or options.target_lang:
        raise TransferError(f"--lang applies to S2T (OWSM) models; {model} is an ASR model (drop --lang).")
    elif options.vocab == "keep" and texts is None:
        vocabulary = build_vocabulary("keep", None, old)
    else:
        vocabulary = build_vocabulary(options.vocab, texts, old, workdir=workdir, text_column=text_column)
    src, dst = options.map if options.map else (None, None)
    primary = TransferSpec(str(source.checkpoint), src, dst, tuple(options.excludes), tuple(options.includes))
    extra = [parse_spec(text) for text in options.init_params]
    specs = [primary, *extra]
    sources = [source, *(open_source(spec.source) for spec in extra)]
    target_config = adapt_config(source.config, vocabulary)
    dropped = unknown_options(target_config)
    for key in dropped:  # ESPnet's trainer refuses a config naming an option it lacks
        del target_config[key]
    plan = make_plan(
        specs,
        target_config,
        vocabulary=vocabulary,
        ignore_init_mismatch=options.ignore_init_mismatch,
        freeze=options.freeze,
        new_rows=options.new_rows,
        stats=options.stats,
        sources=sources,
        transplant=options.transplant,
    )
    if row_init and 0 in plan.row_maps:  # a new S2T language token starts from chosen language rows
        plan.row_maps[0].update(row_init)  # type: ignore[arg-type]
    plan.language = language
    if dropped:
        plan.notes.append(
            f"{', '.join(dropped)} dropped: the installed ESPnet has no such option (written by another release)"
        )
    if source.config.get("init") and not plan.target_config.get("init"):
        plan.notes.append(
            f"init: {source.config['init']} -> null: the installed ESPnet has no {source.config['init']!r} "
            "initialization; the pretrained tensors load from the checkpoint, new ones start at ESPnet's default"
        )
    return plan


def unused_problem(plan: TransferPlan) -> str | None:
    """Why a fine-tune must not start from this plan: the pretrained model's tensors that have no place in the new
    model (a same-architecture transfer that would throw pretrained weights away), or None. Tensors excluded on
    purpose (--exclude, --include) are not among them."""
    unused = plan.unused_source.get(0) or []
    if not unused:
        return None
    shown = ", ".join(unused[:6]) + (f" and {len(unused) - 6} more" if len(unused) > 6 else "")
    excludes = " ".join(f"--exclude {m}" for m in plan.unused_modules.get(0, [])[:4])
    return (
        f"{len(unused)} pretrained tensor(s) have no place in the new model and would be thrown away ({shown}); "
        f"leave them out on purpose with {excludes}, or pass --allow-unused."
    )


def smallest_modules(keys: Sequence[str], every: Iterable[str]) -> list[str]:
    """The outermost modules that hold nothing but `keys` among `every` key (what --exclude would name)."""
    chosen = set(keys)
    every = list(every)
    out: list[str] = []
    for key in keys:
        parts = key.split(".")
        for i in range(1, len(parts) + 1):
            module = ".".join(parts[:i])
            if all(k in chosen for k in every if under(k, module)):
                break
        if module not in out:
            out.append(module)
    return out


def adapt_config(config: dict[str, Any], vocabulary: Vocabulary) -> dict[str, Any]:
    """The pretrained training config with the new vocabulary (token list inline, token type, bpe model), built and
    trained by the installed ESPnet: an initialization it no longer has (`init: chainer`) becomes its default."""
    from espzoo.models.compat import supported_init

    adapted = dict(config)
    if not supported_init(adapted.get("init")):  # the loaded tensors come from the checkpoint anyway
        adapted["init"] = None
    adapted["token_list"] = list(vocabulary.tokens)
    adapted["token_type"] = vocabulary.token_type
    adapted["bpemodel"] = str(vocabulary.bpemodel) if vocabulary.bpemodel else None
    for key in ("init_param", "freeze_param"):  # the pretrained run's own transfer settings do not carry over
        adapted[key] = []
    return adapted


def plan_from_json(path: Path) -> dict[str, Any]:
    """A written plan.json, as data (for reports)."""
    return json.loads(Path(path).read_text(encoding="utf-8"))
