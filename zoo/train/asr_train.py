"""`python -m espzoo.train.asr_train ARGS`: ESPnet's `espnet2.bin.asr_train ARGS` (or `asr_transducer_train` for that
task's configs), after espzoo's checks, with upstreams (Whisper, s3prl) built offline.

It dies with the espzoo process that started it (a lifeline pipe, see espzoo.train._start_child), refuses a
`--resume` checkpoint.pth that holds anything but ESPnet's training state, and lets ESPnet's n-best averaging
leave out epoch checkpoints that are missing (set aside as incomplete by espzoo.train).

Started early (`--espzoo-standby`, see espzoo.train.warm_start), it imports ESPnet while espzoo is still
preparing the data and the init checkpoint, then waits for its arguments and its log on a pipe (ESPZOO_GO_FD):
the import (seconds to tens of seconds) overlaps espzoo's own work instead of following it.

ESPnet's --init_param refuses shape mismatches (without --ignore_init_mismatch) and unexpected keys, but a
tensor the checkpoint lacks silently keeps its random initialization. espzoo's init checkpoints hold exactly
the new model's tensors, so any gap is a bug or a wrong file: this refuses it before training starts. The
model is built on PyTorch's meta device (shapes, no storage), so the check costs milliseconds beyond the
ESPnet import that training does anyway; then the same arguments go to ESPnet's own entry point.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import threading
import traceback
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

MAX_LISTED = 8
LORA_OPTION = "--espzoo_lora"  # PATH of an adapter_config.yaml (espzoo.lora)
SAVED_NAMES_OPTION = "--espzoo_saved_names"  # PATH of OUT/init/saved_names.json (espzoo.transfer.apply_plan)
LR_GROUPS_OPTION = "--espzoo_lr_groups"  # PATH of OUT/init/lr_groups.json (espzoo.train.schedule, --lr-decay)
PARENT_FD_ENV = "ESPZOO_PARENT_FD"  # espzoo.train.PARENT_FD_ENV (not imported: it would import the data modules)
REFUSAL = "espzoo: refusing to train: "  # espzoo.train.REFUSAL: the parent shows the rest of this line
STANDBY = "--espzoo-standby"  # espzoo.train.STANDBY: import ESPnet, then wait for the arguments on GO_FD_ENV
GO_FD_ENV = "ESPZOO_GO_FD"  # espzoo.train.GO_FD_ENV
REPLY_FD_ENV = "ESPZOO_REPLY_FD"  # espzoo.train.REPLY_FD_ENV: answers to calls go back here


def die_with_parent() -> None:
    """Kill this process group when the parent's end of the lifeline closes (the parent exited or was killed)."""
    fd = os.environ.pop(PARENT_FD_ENV, None)  # popped: ESPnet's own workers must not watch it
    if not fd:
        return

    def watch() -> None:
        try:
            while os.read(int(fd), 1):  # the parent never writes: this returns b"" when it is gone
                pass
        except OSError:
            pass
        os.killpg(os.getpgrp(), signal.SIGKILL)

    threading.Thread(target=watch, name="espzoo-lifeline", daemon=True).start()


def warm_up() -> None:
    """Import what training needs before the arguments are known (the ESPnet import is nearly all of it)."""
    from espzoo.models.espnet_env import import_asr_task
    from espzoo.models.upstreams import install_bridges

    install_bridges()
    import_asr_task()


def wait_for_go() -> list[str] | None:
    """The arguments espzoo sends once it has written the config (None: it will not train, so exit quietly);
    from then on stdout and stderr go to the log it names, after what the imports printed. Before them, espzoo
    may send calls (espzoo.train.in_standby: the transfer's model work, done here where ESPnet is imported):
    each is answered on the reply pipe."""
    from espzoo.utils import pipe as _pipe

    fd = int(os.environ.pop(GO_FD_ENV))  # popped: ESPnet's own workers must not read it
    reply = int(os.environ.pop(REPLY_FD_ENV, "-1"))
    while (message := _pipe.receive(fd)) is not None:
        kind, body = message
        if kind == "train":
            break
        outcome = answer(*body)
        try:
            _pipe.send(reply, outcome)
        except OSError:
            raise
        except Exception:  # noqa: BLE001 - it does not pickle (nothing was written): espzoo makes the call itself
            _pipe.send(reply, ("bug", traceback.format_exc()))
    os.close(fd)
    if reply >= 0:
        os.close(reply)
    if message is None:
        return None
    _redirect_output(body["log"])
    return [str(a) for a in body["argv"]]


def answer(function: Any, args: Sequence[Any], kwargs: dict[str, Any]) -> tuple[str, Any]:
    """("ok", the call's value), ("error", the EspzooError or OSError it raised: espzoo raises it as it is) or
    ("bug", why: espzoo then makes the call itself, and fails as it would have)."""
    from espzoo.errors import EspzooError

    try:
        return "ok", function(*args, **kwargs)
    except (EspzooError, OSError) as err:  # OSError: a full disk says so in one sentence there (no redoing it)
        return "error", err
    except Exception:  # noqa: BLE001 - reported, not raised: espzoo redoes the call, with the traceback its own
        return "bug", traceback.format_exc()


def _redirect_output(log: str) -> None:
    """Point stdout and stderr (fds 1 and 2, so ESPnet's workers too) at `log`, first copying into it what was
    written to them until now (espzoo gave them an unlinked file). That file is emptied once copied: whatever it
    still holds when this process ends (a crash before this point) espzoo copies into the log itself."""
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        offset = 0
        while chunk := os.pread(1, 1 << 16, offset):
            os.write(fd, chunk)
            offset += len(chunk)
        os.ftruncate(1, 0)
    except OSError:  # stdout is not a file (started by hand): nothing to copy
        pass
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def resume_globals() -> list[Any]:
    """The only non-tensor classes ESPnet's checkpoint.pth holds (espnet2/train/trainer.py saves the model,
    optimizer, scheduler and scaler state dicts and Reporter.state_dict(), whose stats are numpy scalars and
    datetime.timedelta): what a weights_only load of it may construct."""
    import datetime

    import numpy as np

    scalar = np._core.multiarray.scalar if hasattr(np, "_core") else np.core.multiarray.scalar
    dtypes = [type(np.dtype(t)) for t in ("float64", "float32", "float16", "int64", "int32", "bool")]
    return [scalar, np.dtype, *dtypes, datetime.timedelta]


def checkpoint_problem(path: Path) -> str | None:
    """Why `path` (ESPnet's checkpoint.pth) must not be handed to ESPnet, which unpickles it in full; None if it
    holds nothing but training state (a weights_only load with resume_globals() succeeds)."""
    import pickle

    import torch

    try:
        with torch.serialization.safe_globals(resume_globals()):
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, AttributeError) as err:
        found = re.search(r"(?:unsupported|Unsupported global:) GLOBAL ([\w.]+)", str(err))
        what = f"it asks to run {found.group(1)}" if found else "it holds more than tensors and statistics"
        return (
            f"{path} is not a training state ESPnet wrote ({what}), so it was not loaded; if you did not put it "
            "there, others can write to this out dir: start afresh in a new one you alone can write to."
        )
    if not isinstance(state, dict) or not {"model", "reporter", "optimizers"} <= set(state):
        return f"{path} is not an ESPnet training checkpoint; start afresh in a new out dir."
    return None


def _safe_resume_and_average() -> None:
    """Make ESPnet's resume load checkpoint.pth weights_only (it passes weights_only=False) and its n-best
    averaging skip epochs whose checkpoint file is missing, in this process (not in DDP workers it spawns)."""
    import copy

    import torch
    from espnet2.train import trainer as espnet_trainer

    resume = espnet_trainer.Trainer.resume

    def weights_only_resume(*args: Any, **kwargs: Any) -> Any:
        previous = os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD")
        os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"  # torch.load reads it at each call
        try:
            with torch.serialization.safe_globals(resume_globals()):
                return resume(*args, **kwargs)
        finally:
            if previous is None:
                os.environ.pop("TORCH_FORCE_WEIGHTS_ONLY_LOAD", None)
            else:
                os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = previous

    average = espnet_trainer.average_nbest_models

    def average_complete(*args: Any, **kwargs: Any) -> Any:
        output_dir, reporter = Path(kwargs["output_dir"]), kwargs["reporter"]
        missing = [e for e in reporter.stats if not (output_dir / f"{e}epoch.pth").is_file()]
        # Epochs pruned by ESPnet are never among the n best; only set-aside ones are missing here.
        if missing:
            print(f"espzoo: averaging without epoch(s) {missing}: their checkpoints are incomplete", flush=True)
            reporter = copy.copy(reporter)
            reporter.stats = {e: v for e, v in reporter.stats.items() if e not in missing}
            kwargs["reporter"] = reporter
        return average(*args, **kwargs)

    espnet_trainer.Trainer.resume = staticmethod(weights_only_resume)
    espnet_trainer.average_nbest_models = average_complete


def init_param_problems(
    model_shapes: dict[str, tuple[int, ...]], init_param: str, load: Any, new: frozenset[str] = frozenset()
) -> list[str]:
    """What --init_param `PATH[:SRC[:DST[:EXCLUDES]]]` would leave wrong in a model with `model_shapes`;
    `new` tensors (LoRA adapters) start at their own initialization on purpose and are not missing."""
    path, src, dst, excludes = (init_param.split(":", 3) + ["", "", ""])[:4]
    state = {k: tuple(v.shape) for k, v in load(path).items()}
    excluded = [e for e in excludes.split(",") if e] if excludes else []
    state = {k: v for k, v in state.items() if not any(k.startswith(e) for e in excluded)}
    if src:
        state = {k[len(src) + 1 :]: v for k, v in state.items() if k.startswith(src)}
    target = {k[len(dst) + 1 :]: v for k, v in model_shapes.items() if k.startswith(dst + ".")} if dst else model_shapes
    # Tensors the exclusions skip on purpose are not missing: they keep the new model's own values.
    skipped = [k for k in target if any((f"{dst}.{k}" if dst else k).startswith(e) for e in excluded)]
    missing = [k for k in target if k not in state and k not in skipped and (f"{dst}.{k}" if dst else k) not in new]
    problems = []
    if missing:
        shown = ", ".join(missing[:MAX_LISTED]) + (" ..." if len(missing) > MAX_LISTED else "")
        problems.append(
            f"{path} lacks {len(missing)} of the model's {len(target)} tensors ({shown}); ESPnet would leave them "
            "at random initialization without a word. Write the init checkpoint with espzoo's transfer plan "
            "for this exact config."
        )
    wrong = [f"{k} {state[k]} vs {target[k]}" for k in target if k in state and state[k] != target[k]]
    if wrong:
        problems.append(f"{path} has {len(wrong)} tensor(s) of another shape: " + "; ".join(wrong[:MAX_LISTED]))
    return problems


def refuse(reason: str) -> None:
    print(REFUSAL + " ".join(reason.split()), file=sys.stderr, flush=True)
    sys.exit(2)


def _config_of(argv: Sequence[str]) -> dict[str, Any]:
    from espzoo.utils.yaml_io import load_yaml  # libyaml's where PyYAML has it: this is on the way to the first step

    if "--config" not in argv or argv.index("--config") + 1 >= len(argv):
        return {}
    with open(argv[argv.index("--config") + 1], encoding="utf-8") as f:
        return load_yaml(f) or {}


def main(argv: Sequence[str] | None = None) -> None:
    die_with_parent()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == [STANDBY]:
        warm_up()
        sent = wait_for_go()
        if sent is None:
            return
        argv = sent
        sys.argv[1:] = argv  # the command line ESPnet writes at the top of its log
    from espzoo.models.build import meta_refusal
    from espzoo.models.espnet_env import task_class
    from espzoo.models.upstreams import install_bridges, offline_upstreams, training_gap, upstreams_in
    from espzoo.tasks import TASK_OPTION, task_of

    if argv[:1] == [TASK_OPTION]:  # named by espzoo.tasks.Task.train_args; the config says the same
        argv = argv[2:]
    argv, adapters = _pop_option(argv, LORA_OPTION)
    argv, saved_names = _pop_option(argv, SAVED_NAMES_OPTION)
    argv, lr_groups = _pop_option(argv, LR_GROUPS_OPTION)
    install_bridges()  # ESPnet builds the model again below, in this process
    config = _config_of(argv)
    if gap := training_gap(config):  # the model builds with a stand-in for a package only its training needs
        refuse(gap)
    task = task_class(task_of(config))
    if adapters:  # espzoo's LoRA: the task's models carry the adapters (DDP workers read the env too)
        from espzoo.lora import config as lora_config
        from espzoo.lora import espnet_tasks as lora_espnet_tasks
        from espzoo.lora import weights as lora_weights

        os.environ[lora_config.ENV] = adapters
        task = lora_espnet_tasks.adapted_task(task)
        lora_weights.use_exact_averaging()  # before _safe_resume_and_average wraps it: LoRA's n-best average is exact
    if lr_groups:  # --lr-decay: ESPnet's own optimizer parameter groups, one per learning rate (train.lr_groups)
        from espzoo.train import lr_groups as lr_groups_module

        os.environ[lr_groups_module.ENV] = lr_groups
        task = lr_groups_module.grouped_task(task)
    args = task.get_parser().parse_args(argv)
    checkpoint = Path(args.output_dir) / "checkpoint.pth"
    if args.resume and checkpoint.exists():
        problem = checkpoint_problem(checkpoint)
        if problem:
            refuse(problem)
    import torch

    def load(path: str) -> dict[str, Any]:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return state.get("module", state) if isinstance(state.get("module"), dict) else state

    # Upstreams (Whisper, s3prl) get the init checkpoint's dimensions and are never downloaded: it overwrites them.
    reference = None
    if args.init_param:
        reference = {k: tuple(v.shape) for k, v in load(args.init_param[0].split(":")[0]).items()}
    uses = upstreams_in(vars(args))
    if args.init_param and not args.collect_stats:
        try:  # each build in its own offline_upstreams: a fused front end's upstreams are matched by build order
            with offline_upstreams(reference, uses), torch.device("meta"):
                model = task.build_model(args=args)
        except (NotImplementedError, RuntimeError) as err:  # a module the meta device cannot build (models.build)
            if not meta_refusal(err):
                raise
            with offline_upstreams(reference, uses):
                model = task.build_model(args=args)
        shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        new = frozenset(k for k in shapes if k.endswith((".lora_A", ".lora_B")))
        del model

        problems = [p for spec in args.init_param for p in init_param_problems(shapes, spec, load, new)]
        if problems:
            refuse(" ".join(problems))
    # A logging call during the check installed a default root handler; ESPnet's own logging.basicConfig
    # (its format, its log_level) only takes effect on a root logger without handlers.
    import logging

    for handler in list(logging.root.handlers):
        logging.root.removeHandler(handler)
    _safe_resume_and_average()
    names = _read_names(saved_names) if saved_names else {}
    output_dir = Path(args.output_dir)
    if names:  # a resumed run: its earlier models back under the installed ESPnet's names, which it averages
        save_models_under_names(output_dir, {saved: name for name, saved in names.items()})
    with offline_upstreams(reference, uses):
        task.main(cmd=argv)  # what espnet2.bin.{asr,asr_transducer,s2t}_train do, with the (possibly adapted) task
    if names:
        save_models_under_names(output_dir, names)


def _read_names(path: str) -> dict[str, str]:
    import json

    return json.loads(Path(path).read_text(encoding="utf-8"))


def save_models_under_names(output_dir: Path, names: dict[str, str]) -> None:
    """Every model ESPnet saved in `output_dir` (epoch models and their averages; not the training state
    checkpoint.pth) with its tensors renamed by `names`. After training, `names` are the pretrained checkpoint's
    names (saved by an older ESPnet, renamed on load by the installed one): then every release that loaded the
    pretrained model loads the fine-tuned one, whichever Python trained it (ESPnet 202511 loads a checkpoint
    non-strictly and would leave a tensor under a new name at random without a word)."""
    from espzoo.transfer.apply import save_under_names

    for path in sorted(output_dir.glob("*.pth")):
        if path.is_file() and not path.is_symlink() and path.name != "checkpoint.pth":
            save_under_names(path, names)


def _pop_option(argv: list[str], option: str) -> tuple[list[str], str | None]:
    """`argv` without `option VALUE` (an espzoo option ESPnet's parser does not know), and VALUE."""
    if option not in argv:
        return argv, None
    at = argv.index(option)
    return argv[:at] + argv[at + 2 :], argv[at + 1]


if __name__ == "__main__":
    main()
