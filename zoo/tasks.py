"""The ESPnet tasks espzoo opens, fine-tunes and decodes: one row each, and every fact that differs between them
is a field of its row. Every caller asks this module; nothing else spells a task's name.

    from espzoo.tasks import task_of
    task = task_of(config)            # the row of the task that trained the model of `config`
    task.name, task.family            # "s2t_ctc", "s2t"
    task.train_args                   # what tells espzoo.train.asr_train which task to run

Adding a model family is a row in TASKS (its detection rule, ESPnet's task and inference classes, what its
repos are called) and a test that opens, fine-tunes and decodes a tiny model of it (README: "Adding a model
family"). Pure facts, torch-free and import-free (`espzoo search` imports it): ESPnet's classes are imported from
them by espzoo.models (espnet_env.task_class, compat.inference_class).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

Config = Mapping[str, Any]


def _is_s2t_ctc(config: Config) -> bool:
    """OWSM-CTC (espnet2.tasks.s2t_ctc): its preprocessor, its model class or its prompt encoder."""
    return config.get("preprocessor") == "s2t_ctc" or config.get("model") == "espnet_ctc" or "promptencoder" in config


def _is_s2t(config: Config) -> bool:
    """OWSM (espnet2.tasks.s2t): its preprocessor or its special symbols."""
    model_conf = config.get("model_conf") or {}
    return config.get("preprocessor") == "s2t" or "sym_na" in model_conf or "sym_sop" in model_conf


def _is_asr_transducer(config: Config) -> bool:
    """espnet2.tasks.asr_transducer: one block-built encoder, so no `encoder` key but `encoder_conf.body_conf`."""
    encoder_conf = config.get("encoder_conf")
    return "encoder" not in config and isinstance(encoder_conf, Mapping) and "body_conf" in encoder_conf


def _any(config: Config) -> bool:
    return True


@dataclass(frozen=True)
class Task:
    name: str  # espzoo's name, and ESPnet's: espnet2/tasks/<name>.py, espnet2/bin/<name>_train.py
    family: str  # what its repos are called: meta.yaml's <family>_model_file, exp/<family>_*, the catalog's task
    espnet_task: tuple[str, str]  # ESPnet's module and task class
    inference: tuple[str, str]  # ESPnet's module and inference class (OWSM-CTC's moved: espzoo.models.compat)
    lora_name: str  # espzoo.lora.espnet_tasks.Adapted<lora_name>: the task whose models carry adapters
    prompted: bool  # decodes and trains with a language and task prompt (OWSM's <eng><asr>)
    ctc_only: bool  # decodes by CTC alone (greedy), without an attention decoder to search with
    matches: Callable[[Config], bool]  # the detection rule, asked in TASKS' order

    @property
    def model_file_key(self) -> str:
        """meta.yaml's key for the model file (ESPnet's pack writes asr_model_file or s2t_model_file)."""
        return f"{self.family}_model_file"

    @property
    def train_config_key(self) -> str:
        return f"{self.family}_train_config"

    @property
    def train_args(self) -> list[str]:
        """The arguments that tell espzoo.train.asr_train which ESPnet task to run (none for the ASR family: it tells
        ASR from asr_transducer by the config)."""
        return [] if self.family == ASR.family else [TASK_OPTION, self.name]


TASK_OPTION = "--espzoo-task"  # espzoo.train.asr_train's first argument when the task is not ASR

ASR = Task("asr", "asr", ("espnet2.tasks.asr", "ASRTask"), ("asr_inference", "Speech2Text"), "ASRTask",
           prompted=False, ctc_only=False, matches=_any)
ASR_TRANSDUCER = Task("asr_transducer", "asr", ("espnet2.tasks.asr_transducer", "ASRTransducerTask"),
                      ("asr_inference", "Speech2Text"), "ASRTransducerTask",
                      prompted=False, ctc_only=False, matches=_is_asr_transducer)
S2T = Task("s2t", "s2t", ("espnet2.tasks.s2t", "S2TTask"), ("s2t_inference", "Speech2Text"), "S2TTask",
           prompted=True, ctc_only=False, matches=_is_s2t)
S2T_CTC = Task("s2t_ctc", "s2t", ("espnet2.tasks.s2t_ctc", "S2TTask"), ("s2t_ctc_inference", "Speech2Text"),
               "S2TCTCTask", prompted=True, ctc_only=True, matches=_is_s2t_ctc)

# Asked in this order: the first whose rule matches is the task (ASR matches everything, so it comes last).
TASKS: tuple[Task, ...] = (S2T_CTC, S2T, ASR_TRANSDUCER, ASR)
FAMILIES: tuple[str, ...] = tuple(dict.fromkeys(t.family for t in reversed(TASKS)))  # ("asr", "s2t")


def task_of(config: Config) -> Task:
    """The task that trained the model of `config` (a training config as ESPnet writes it)."""
    return next(t for t in TASKS if t.matches(config))


def by_name(name: str) -> Task:
    """The row named `name` (a name espzoo wrote: `--espzoo-task NAME`, provenance.json's espnet_task)."""
    for task in TASKS:
        if task.name == name:
            return task
    raise KeyError(name)


def by_lora_name(name: str) -> Task | None:
    return next((t for t in TASKS if t.lora_name == name), None)
