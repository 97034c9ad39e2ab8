"""Importing ESPnet safely: offline, quiet, and only when a command needs it.

ESPnet's ASR import chain imports g2p_en, which calls `nltk.download` at import time when two NLTK
resources are missing. With no network that is a long, noisy failure; we point NLTK_DATA at a folder
holding placeholders that satisfy `nltk.data.find` (espzoo never uses g2p, so they are never read).
"""

from __future__ import annotations

import importlib
import os
import zipfile
from pathlib import Path
from typing import Any

from espzoo.tasks import ASR, TASKS, Task
from espzoo.utils.fs import atomic_write

_NLTK_RESOURCES = ("taggers/averaged_perceptron_tagger_eng.zip", "corpora/cmudict.zip")


def nltk_data_dir() -> Path:
    """A folder satisfying g2p_en's import-time checks, created once under ESPZOO_HOME."""
    from espzoo.utils.home import espzoo_home

    root = espzoo_home() / "nltk_data"
    for resource in _NLTK_RESOURCES:
        path = root / resource
        if not path.is_file():
            atomic_write(path, _placeholder_zip)
    return root


def _placeholder_zip(tmp: Path) -> None:
    with zipfile.ZipFile(tmp, "w") as zf:
        zf.writestr("README", "placeholder written by espzoo so that g2p_en imports offline\n")


def espnet_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for a process that imports ESPnet (used for subprocesses too)."""
    env = dict(os.environ if base is None else base)
    data = str(nltk_data_dir())
    if data not in env.get("NLTK_DATA", "").split(os.pathsep):
        env["NLTK_DATA"] = os.pathsep.join(p for p in (data, env.get("NLTK_DATA")) if p)
    return env


def import_asr_task() -> Any:
    """`espnet2.tasks.asr.ASRTask`, imported with the offline NLTK setup in place (~7 s the first time)."""
    from espzoo.models.compat import import_notes_silenced, needs_nltk_setup

    os.environ.update({"NLTK_DATA": espnet_env()["NLTK_DATA"]})
    if needs_nltk_setup():  # espnet 202611 without its tts extra has no nltk to set up
        import nltk

        # nltk reads NLTK_DATA when first imported; make sure a late setting still counts.
        if os.environ["NLTK_DATA"].split(os.pathsep)[0] not in nltk.data.path:
            nltk.data.path[:0] = os.environ["NLTK_DATA"].split(os.pathsep)
    with import_notes_silenced():  # ESPnet's import chain notes that the optional flash_attn is missing
        from espnet2.tasks.asr import ASRTask

    return ASRTask


def task_class(task: Task) -> Any:
    """ESPnet's task class for `task` (a row of espzoo.tasks), imported with the offline setup: NLTK data for every
    task's import chain, and the optional packages' notes kept off stdout."""
    import contextlib
    import importlib
    import io

    asr_task = import_asr_task()  # also installs the offline setup every task's import chain needs
    if task.espnet_task == ASR.espnet_task:
        return asr_task
    module, cls = task.espnet_task
    with contextlib.redirect_stdout(io.StringIO()):  # flash_attn notes go to stdout
        return getattr(importlib.import_module(module), cls)


class DerivedTasks:
    """ESPnet task classes with some methods of espzoo's, one per row of espzoo.tasks (`<prefix><lora_name>`),
    made on first use (ESPnet's import is heavy) and found again by name: DDP's spawned workers unpickle a task class
    by its module and name, so the module that holds a `DerivedTasks` makes it its `__getattr__`."""

    def __init__(self, module: str, prefix: str, methods: dict[str, Any]) -> None:
        self.module, self.prefix, self.methods = module, prefix, methods
        self.bases = {task.lora_name: task.espnet_task for task in TASKS}  # both S2T tasks name their class S2TTask
        self.built: dict[str, type] = {}

    def of(self, base_task: type) -> type | None:
        """The class derived from `base_task`, None for a task espzoo has no row for."""
        for key, where in self.bases.items():
            if where == (base_task.__module__, base_task.__name__):
                return self(f"{self.prefix}{key}")
        return None

    def __call__(self, name: str) -> type:
        key = name.removeprefix(self.prefix)
        if not name.startswith(self.prefix) or key not in self.bases:
            raise AttributeError(name)
        if name not in self.built:
            module, task_name = self.bases[key]
            base = getattr(importlib.import_module(module), task_name)
            methods = {method: classmethod(function) for method, function in self.methods.items()}
            self.built[name] = type(name, (base,), {**methods, "__module__": self.module, "__qualname__": name})
        return self.built[name]
