"""Carrying out a plan: the init checkpoint (loaded tensors, transplanted rows, fresh ones) written with
little memory, and checkpoints saved back under the pretrained model's tensor names.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from espzoo.errors import TransferError
from espzoo.models.build import build_model
from espzoo.repo import (
    SAVED_NAMES_NAME,
)
from espzoo.transfer.plan import LOADED, NewRows, TransferPlan, _shapes_of, rows_for
from espzoo.transfer.sources import _load_checkpoint
from espzoo.transfer.spec import NORMALIZE_PREFIX, under
from espzoo.utils.fs import atomic_write
from espzoo.utils.yaml_io import dump_yaml


@dataclass(frozen=True)
class TransferResult:
    checkpoint: Path  # the adapted state dict: every tensor of the new model
    config: Path  # the adapted ESPnet training config (init_param points at the checkpoint)
    plan: Path  # plan.json
    tokens: Path  # tokens.txt


def adapted_state(plan: TransferPlan, *, seed: int = 0) -> dict[str, Any]:
    """Every tensor of the new model: planned ones from the sources (loaded tensors stay views of the mmapped
    checkpoints), the rest (`init`, `exclude`, `mismatch`) from ESPnet's initialization of the new model, seeded."""
    return _adapted_state(plan, seed=seed)[0]


def _adapted_state(plan: TransferPlan, *, seed: int = 0) -> tuple[dict[str, Any], list[tuple[int, int]]]:
    """(the adapted state, the page ranges of memory-mapped source storages it may release once written)."""
    import torch

    states: dict[int, dict[str, Any]] = {}
    regions: list[tuple[int, int]] = []
    generator = torch.Generator().manual_seed(seed)
    fresh = _fresh_tensors(plan, [r.target_key for r in plan.rows if r.action not in LOADED], seed)
    out: dict[str, Any] = {}
    for row in plan.rows:
        if row.action not in LOADED or row.spec is None or row.source_key is None:
            out[row.target_key] = fresh[row.target_key]
            continue
        if row.spec not in states:
            states[row.spec], mapped = _load_checkpoint(plan.sources[row.spec].checkpoint)
            if mapped:
                regions += _mapped_regions(states[row.spec].values())
        value = states[row.spec][row.source_key]
        if row.action == "transplant":
            axis = plan.vocab_axes[row.target_key]
            row_map = rows_for(plan.row_maps[row.spec], value.shape[axis], row.target_shape[axis])
            value = transplant_rows(value, row.target_shape, axis, row_map, plan.new_rows, generator)
        out[row.target_key] = value
    for key, first in plan.aliases.items():  # one tensor under two names: one value (see _share_aliases)
        if key in out and first in out:
            out[key] = out[first]
    return out, regions


def _fresh_tensors(plan: TransferPlan, keys: list[str], seed: int) -> dict[str, Any]:
    """ESPnet's initialization of the new model for `keys` (built on CPU only when some tensor needs it)."""
    import torch

    if not keys:
        return {}
    config = dict(plan.target_config)
    stats_file = (config.get("normalize_conf") or {}).get("stats_file")
    missing_stats = config.get("normalize") == "global_mvn" and not (stats_file and Path(stats_file).is_file())
    if missing_stats:  # new stats not computed yet: identity normalization until ESPnet's collect_stats runs
        config["normalize"], config["normalize_conf"] = None, {}
    torch.manual_seed(seed)
    if all(under(key, NORMALIZE_PREFIX) for key in keys) and config.get("normalize"):
        # Only the normalization buffers (--stats new): build that module alone, not the whole model.
        from espnet2.tasks.asr import normalize_choices

        module = normalize_choices.get_class(config["normalize"])(**(config.get("normalize_conf") or {}))
        model = torch.nn.ModuleDict({NORMALIZE_PREFIX: module})
    else:
        model = build_model(config, device="cpu", reference=_shapes_of(plan.sources[0].checkpoint))
    state = model.state_dict()
    shapes = plan.by_key()
    fresh = {}
    for key in keys:
        if key in state:
            fresh[key] = state[key]
        elif missing_stats and under(key, NORMALIZE_PREFIX):
            fresh[key] = (torch.zeros if key.endswith("mean") else torch.ones)(shapes[key].target_shape)
    del model, state  # only the tensors kept above stay alive
    return fresh


def transplant_rows(
    pretrained: Any,
    target_shape: tuple[int, ...],
    axis: int,
    new_to_old: dict[int, int],
    new_rows: NewRows,
    generator: Any,
) -> Any:
    """A vocabulary-sized tensor for the new vocabulary: shared tokens keep their pretrained row.

    A new token mapped to a tuple of old indices starts from the mean of their rows (`compose`: the old tokens
    that spell it; an S2T language token: the language rows). The others start from the mean of all pretrained
    rows (`compose`, `mean`): at the output layers their logits then start at the average of what the model gives
    known tokens (not dominating the softmax, not vanishing from it), and as decoder inputs they start at the
    centre of the learned embeddings instead of a direction the decoder never saw. `random` draws them from a
    normal with the pretrained rows' mean and spread instead.
    """
    import torch

    old = pretrained.movedim(axis, 0)
    shape = list(target_shape)
    shape[0], shape[axis] = shape[axis], shape[0]
    new = torch.empty(shape, dtype=old.dtype)
    if new_rows != "random":
        new[:] = old.mean(dim=0, keepdim=True)
    else:
        values = old.float()
        new.copy_(torch.normal(values.mean().item(), values.std().item(), size=new.shape, generator=generator))
    single = {n: o for n, o in new_to_old.items() if isinstance(o, int)}
    if single:
        index_new = torch.tensor(list(single.keys()), dtype=torch.long)
        index_old = torch.tensor(list(single.values()), dtype=torch.long)
        new[index_new] = old[index_old]
    for n, olds in new_to_old.items():
        if not isinstance(olds, int):
            new[n] = old[torch.tensor(list(olds), dtype=torch.long)].mean(dim=0)
    return new.movedim(0, axis).contiguous()


def apply_plan(plan: TransferPlan, dest: Path, *, seed: int = 0) -> TransferResult:
    """Write `dest/init.pth` (the adapted checkpoint), `dest/config.yaml`, `dest/tokens.txt`, `dest/plan.json`
    (and `dest/bpe.model`, `dest/feats_stats.npz` when the model has them), each complete before it appears."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for row in plan.rows:
        if row.action == "mismatch" and not plan.ignore_init_mismatch:
            raise TransferError(f"{row.target_key} differs in shape; exclude it or pass --ignore-init-mismatch.")
    checkpoint = dest / "init.pth"
    atomic_write(checkpoint, lambda tmp: _save_lean(*_adapted_state(plan, seed=seed), tmp))

    config = dict(plan.target_config)
    vocabulary = plan.vocabulary
    # A sentencepiece file travels; a tokenizer name (Whisper's `whisper_multilingual`) stays as it is.
    if vocabulary and vocabulary.bpemodel and Path(vocabulary.bpemodel).is_file():
        atomic_write(dest / "bpe.model", lambda tmp: shutil.copyfile(vocabulary.bpemodel, tmp))  # type: ignore[arg-type]
        config["bpemodel"] = str((dest / "bpe.model").resolve())
    stats_file = (config.get("normalize_conf") or {}).get("stats_file")
    if stats_file and Path(stats_file).is_file():
        atomic_write(dest / "feats_stats.npz", lambda tmp: shutil.copyfile(stats_file, tmp))
        config["normalize_conf"] = {**config["normalize_conf"], "stats_file": str((dest / "feats_stats.npz").resolve())}
    config["init_param"] = [str(checkpoint.resolve())]
    config["ignore_init_mismatch"] = False  # init.pth holds exactly the target's shapes
    config["freeze_param"] = list(plan.freeze)
    tokens = dest / "tokens.txt"
    atomic_write(tokens, lambda tmp: tmp.write_text("\n".join(config["token_list"]) + "\n", encoding="utf-8"))
    config_path = dest / "config.yaml"
    atomic_write(config_path, lambda tmp: tmp.write_text(dump_yaml(config, allow_unicode=True, sort_keys=False)))
    names, saved = plan.saved_names(), dest / SAVED_NAMES_NAME
    if names:  # the trained model is saved under the pretrained checkpoint's names (espzoo.train.asr_train)
        atomic_write(saved, lambda tmp: tmp.write_text(json.dumps(names, indent=1)))
    else:
        saved.unlink(missing_ok=True)
    plan_path = dest / "plan.json"
    atomic_write(plan_path, lambda tmp: tmp.write_text(json.dumps(plan.to_json(), indent=1, ensure_ascii=False)))
    return TransferResult(checkpoint, config_path, plan_path, tokens)


def save_under_names(path: Path, names: dict[str, str]) -> bool:
    """Rewrite the state dict in `path` with its tensors under `names` ({current name: name to save}), in the same
    order, atomically; False when none of them is there (already saved so, or another model)."""
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    if not any(key in state for key in names):
        return False
    renamed = type(state)((names.get(key, key), value) for key, value in state.items())
    atomic_write(path, lambda tmp: torch.save(renamed, tmp))
    return True


class _ReleasingWriter:
    """A file that, every `every` bytes written, tells the kernel it may drop the memory-mapped source pages
    already copied: they are clean file pages (re-read from disk if touched again), so the process's resident
    memory stays near one chunk instead of growing to the whole checkpoint while torch.save streams it out."""

    def __init__(self, path: Path, regions: list[tuple[int, int]], every: int = 64 << 20) -> None:
        self._file = open(path, "wb")  # noqa: SIM115 (closed in close())
        self._regions = regions
        self._every = every
        self._pending = 0

    def write(self, data: Any) -> int:
        n = self._file.write(data)
        self._pending += n
        if self._pending >= self._every:
            self._pending = 0
            _drop_pages(self._regions)
        return n

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()
        _drop_pages(self._regions)


def _save_lean(state: dict[str, Any], regions: list[tuple[int, int]], path: Path) -> None:
    import torch

    writer = _ReleasingWriter(path, regions)
    try:
        torch.save(state, writer)
    finally:
        writer.close()


def _mapped_regions(tensors: Iterable[Any]) -> list[tuple[int, int]]:
    """Page-aligned address ranges of memory-mapped storages (Linux only; empty elsewhere). Only ever pass
    tensors of a file mapping: releasing the pages of ordinary memory would zero them."""
    if not sys.platform.startswith("linux"):
        return []
    page = os.sysconf("SC_PAGE_SIZE")
    regions = []
    for value in tensors:
        storage = value.untyped_storage()
        if storage.nbytes() == 0:
            continue
        start = storage.data_ptr()
        end = start + storage.nbytes()
        # Shrink to whole pages inside the storage: never touch a neighbour's bytes.
        start = (start + page - 1) // page * page
        end = end // page * page
        if end > start:
            regions.append((start, end - start))
    return regions


def _drop_pages(regions: list[tuple[int, int]]) -> None:
    if not regions:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    madv_dontneed = 4
    for start, length in regions:
        libc.madvise(ctypes.c_void_p(start), ctypes.c_size_t(length), madv_dontneed)
