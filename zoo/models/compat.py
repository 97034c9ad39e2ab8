"""What differs between the two ESPnet releases espzoo runs on, in the parts espzoo touches: one home for it.

espzoo installs espnet 202511 on Python 3.11 and espnet 202611 on Python 3.12-3.13 (pyproject.toml). Diffing the
installed sources of the two (espnet2/tasks, espnet2/bin/*_inference*.py, espnet2/train/trainer.py, abs_task.py)
leaves these differences that reach espzoo:

- OWSM-CTC greedy decoding. 202511: `espnet2.bin.s2t_inference_ctc.Speech2TextGreedySearch`, called. 202611: the
  one `espnet2.bin.s2t_inference.Speech2Text` loads CTC-only checkpoints too and decodes them with `best_path()`;
  the old class remains only as a forwarder that warns (DeprecationWarning).
- The note that the optional flash_attn is missing, printed when ESPnet's attention module is first imported: to
  stdout in 202511, to stderr in 202611 (espnet2/legacy/nets/pytorch_backend/transformer/attention.py).
- Padded batches. 202511's convolutional subsampling slices the padded input mask, so a shorter row of a batch
  counts up to two frames more than it has alone and the padding reaches its encoder output (espzoo.decode's
  padding guards correct it); 202611 encodes each row of a batch as it encodes it alone (ESPnet issue 6600).
- NLTK. 202511 depends on nltk and its ASR import chain imports g2p_en, which downloads at import time
  (espzoo.models.espnet_env points it at placeholders); 202611 depends on neither (g2p_en moved to `espnet[tts]`).

- Initializations. 202611 dropped `init: chainer` (one of six choices until June 2025; RNN configs up to 202402
  name it) and lists the ones it has in `espnet2.torch_utils.initialize.INITIALIZATIONS`; its `build_model`
  refuses the others, while its `build_model_from_file` ignores them (the weights come from the checkpoint).
  `supported_init` reads that list; espzoo builds and trains such a config with `init: null` (espzoo.transfer).
- Tensor names. 202611 renamed the conv subsampling's output projection (`encoder.embed.out.0.*` became
  `encoder.embed.out.*`) and renames the old names inside `load_state_dict` only. espzoo follows the model's own
  loader (espzoo.models.build.loader_renames, no table) and saves fine-tuned models under the pretrained names again.

The rest is the same for espzoo: the task classes and their class choices, the inference classes' attributes
espzoo reads (asr_model, s2t_model, tokenizer, converter, beam_search, dtype, preprocessor_conf), and every
trainer option espzoo passes (202611 only adds --wandb_allow_val_change). 202611 also loads checkpoints with
weights_only=True itself (espnet2.torch_utils.safe_torch_load), which espzoo's own weights-only resume
(espzoo.train.asr_train) does on both. `import espnet; espnet.__version__` works on both.

Nothing here imports ESPnet at module import: the release is read from the installed distribution's metadata.
"""

from __future__ import annotations

import contextlib
import functools
import io
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

from espzoo.tasks import Task

# The first release whose S2T inference folds OWSM-CTC's greedy search into `Speech2Text.best_path`, and whose
# subsampling masks count each row's own frames.
_S2T_BEST_PATH = 202611


@functools.cache
def espnet_release() -> int:
    """The installed ESPnet release as a number (202511, 202611), from its distribution metadata."""
    return int(metadata.version("espnet").split(".")[0])


def s2t_ctc_inference() -> tuple[str, str, str]:
    """(module under espnet2.bin, class, method) that decode an OWSM-CTC model greedily with the installed ESPnet;
    also what a model card tells its reader to use."""
    if espnet_release() >= _S2T_BEST_PATH:
        return "s2t_inference", "Speech2Text", "best_path"
    return "s2t_inference_ctc", "Speech2TextGreedySearch", "__call__"


def s2t_ctc_greedy(config_path: Path | str, model_file: Path | str | None, **kwargs: Any) -> Any:
    """ESPnet's greedy (best-path) decoder of an OWSM-CTC model. Called with `(speech, lang_sym=, task_sym=)` it
    returns `[(text, tokens, token_ids, text_nospecial, hyp)]` on either release; it has `s2t_model`, `tokenizer`
    and `preprocessor_conf`. `kwargs` are the inference class's (device, lang_sym, task_sym)."""
    import importlib

    module, cls, method = s2t_ctc_inference()
    inference = getattr(importlib.import_module(f"espnet2.bin.{module}"), cls)
    if method == "__call__":
        return inference(s2t_train_config=str(config_path), s2t_model_file=model_file, **kwargs)

    class BestPath(inference):  # type: ignore[misc, valid-type]
        """202611's Speech2Text whose call is best_path (its own call runs a prefix beam search)."""

        def __call__(self, speech: Any, **call: Any) -> Any:
            return getattr(self, method)(speech, **call)

    return BestPath(s2t_train_config=str(config_path), s2t_model_file=model_file, **kwargs)


def subsampling_counts_own_frames() -> bool:
    """Whether ESPnet's encoder gives each row of a padded batch the length and output it has alone (202611; 202511
    counts up to two frames more for shorter rows, and their padding reaches the output)."""
    return espnet_release() >= _S2T_BEST_PATH


def supported_init(init: str | None) -> bool:
    """Whether the installed ESPnet's `build_model` accepts `--init init` (202611 lists what it has; 202511 has
    every value a released config names)."""
    if init is None:
        return True
    from espnet2.torch_utils import initialize

    known = getattr(initialize, "INITIALIZATIONS", None)
    return known is None or init in known


def needs_nltk_setup() -> bool:
    """Whether ESPnet's import chain may import g2p_en, which calls `nltk.download` at import (202511, or any
    release with espnet[tts] installed): then espzoo.models.espnet_env points NLTK at its placeholders first."""
    try:
        metadata.version("nltk")
    except metadata.PackageNotFoundError:
        return False
    return True


@contextlib.contextmanager
def import_notes_silenced() -> Iterator[None]:
    """Around a first import of ESPnet's task modules: its note about the missing optional flash_attn goes (stdout
    belongs to espzoo's commands, JSON and transcripts; stderr to their one-sentence errors)."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


def inference_class(task: Task) -> tuple[str, str]:
    """ESPnet's inference module (under espnet2.bin) and class for `task` in the installed release: OWSM-CTC's
    moved into s2t_inference in 202611 (s2t_ctc_inference)."""
    if task.ctc_only and task.prompted:
        return s2t_ctc_inference()[:2]
    return task.inference
