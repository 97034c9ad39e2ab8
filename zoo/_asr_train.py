"""`python -m espzoo._asr_train ARGS`: ESPnet's `espnet2.bin.asr_train ARGS`, after one check of --init_param.

ESPnet's --init_param refuses shape mismatches (without --ignore_init_mismatch) and unexpected keys, but a
tensor the checkpoint lacks silently keeps its random initialization. espzoo's init checkpoints hold exactly
the new model's tensors, so any gap is a bug or a wrong file: this refuses it before training starts. The
model is built on PyTorch's meta device (shapes, no storage), so the check costs milliseconds beyond the
ESPnet import that training does anyway; then the same arguments go to ESPnet's own entry point.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

MAX_LISTED = 8
LORA_OPTION = "--espzoo_lora"  # PATH of an adapter_config.yaml (espzoo.lora)


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


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    from espzoo._espnet import import_asr_task

    asr_task = import_asr_task()
    argv, adapters = _pop_option(argv, LORA_OPTION)
    if adapters:  # espzoo's LoRA: the task's models carry the adapters (DDP workers read the env too)
        from espzoo import lora

        os.environ[lora.ENV] = adapters
        asr_task = lora.adapted_task(asr_task)
    args = asr_task.get_parser().parse_args(argv)
    if args.init_param and not args.collect_stats:
        import torch

        with torch.device("meta"):
            model = asr_task.build_model(args=args)
        shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        new = frozenset(k for k in shapes if k.endswith((".lora_A", ".lora_B")))
        del model

        def load(path: str) -> dict[str, Any]:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            return state.get("module", state) if isinstance(state.get("module"), dict) else state

        problems = [p for spec in args.init_param for p in init_param_problems(shapes, spec, load, new)]
        if problems:
            print("espzoo: refusing to train: " + " ".join(problems), file=sys.stderr)
            sys.exit(2)
    # A logging call during the check installed a default root handler; ESPnet's own logging.basicConfig
    # (its format, its log_level) only takes effect on a root logger without handlers.
    import logging

    for handler in list(logging.root.handlers):
        logging.root.removeHandler(handler)
    asr_task.main(cmd=argv)  # what espnet2.bin.asr_train.main does, with the (possibly adapted) task


def _pop_option(argv: list[str], option: str) -> tuple[list[str], str | None]:
    """`argv` without `option VALUE` (an espzoo option ESPnet's parser does not know), and VALUE."""
    if option not in argv:
        return argv, None
    at = argv.index(option)
    return argv[:at] + argv[at + 2 :], argv[at + 1]


if __name__ == "__main__":
    main()
