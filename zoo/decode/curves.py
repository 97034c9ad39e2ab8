"""The curves of a fine-tune, as ESPnet draws and logs them itself, kept in OUT:

    OUT/espnet/images/<value>.png                       one plot per reported value (loss, acc, cer, wer, lr, ...),
                                                        train and valid against the epoch (ESPnet's --use_matplotlib)
    OUT/espnet/tensorboard/{train,valid}/events.*       TensorBoard logs (ESPnet's --use_tensorboard, through torch's
                                                        SummaryWriter): `tensorboard --logdir OUT/espnet/tensorboard`

Each is switched on when its package is installed (matplotlib; tensorboard, which SummaryWriter imports), so a
venv without them still trains. ESPnet's attention plots (`--num_att_plot`, on by default with matplotlib) stay
off: they decode a few utterances more each epoch and write a folder of images per utterance.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

ESPNET_DIR = "espnet"  # OUT/espnet: ESPnet's --output_dir (espzoo.train)
IMAGES = "images"
TENSORBOARD = "tensorboard"
# Plots of how long steps took (ESPnet reports *_time, gpu_max_cached_mem_GB, ...) say nothing about the model:
# the model card shows the others.
_NOT_FOR_CARD = ("time", "gpu_", "iter_")


def installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def espnet_args() -> list[str]:
    """ESPnet trainer options that turn on the plots and the TensorBoard logs (those whose package is installed)."""
    on = {True: "true", False: "false"}
    return ["--use_matplotlib", on[installed("matplotlib")], "--use_tensorboard", on[installed("tensorboard")],
            "--num_att_plot", "0"]


@dataclass(frozen=True)
class Curves:
    images: list[Path]  # the PNGs ESPnet drew, by name
    tensorboard: Path | None  # the log dir for `tensorboard --logdir`, when it holds event files

    def to_json(self) -> dict[str, object]:
        return {"images": [str(p) for p in self.images], "tensorboard": str(self.tensorboard or "") or None}


def find(out: str | Path) -> Curves:
    """The curves a fine-tune left in OUT (none when it ran with them off)."""
    espnet = Path(out) / ESPNET_DIR
    images = sorted((espnet / IMAGES).glob("*.png"))
    logs = espnet / TENSORBOARD
    return Curves(images, logs if any(logs.glob("*/events.out.tfevents.*")) else None)


def for_card(images: list[Path]) -> list[Path]:
    """The plots a model card shows: the model's values (loss, accuracy, error rates, learning rate), not timings."""
    return [p for p in images if not any(part in p.stem for part in _NOT_FOR_CARD)]
