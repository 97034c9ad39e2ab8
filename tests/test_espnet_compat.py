"""espzoo.models.compat: the one home of what differs between espnet 202511 (Python 3.11) and 202611 (3.12+).

Each test runs on whichever release this Python installed (pyproject's markers), so the suite on both Pythons
checks both branches against the real ESPnet.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import warnings
from pathlib import Path

import pytest
from _paths import SPEECH_ROOT

from espzoo.models import compat


def test_release_is_the_one_pyproject_installs_for_this_python() -> None:
    import espnet

    assert compat.espnet_release() == int(espnet.__version__)
    assert compat.espnet_release() == (202511 if sys.version_info < (3, 12) else 202611)


def test_s2t_ctc_inference_names_a_class_and_method_espnet_has() -> None:
    module, cls, method = compat.s2t_ctc_inference()
    inference = getattr(importlib.import_module(f"espnet2.bin.{module}"), cls)
    assert callable(getattr(inference, method))
    if compat.espnet_release() >= 202611:  # the greedy search folded into the one S2T class
        assert (module, cls, method) == ("s2t_inference", "Speech2Text", "best_path")


def test_nltk_setup_is_needed_exactly_when_nltk_is_installed() -> None:
    found = importlib.util.find_spec("nltk") is not None
    assert compat.needs_nltk_setup() is found
    if compat.espnet_release() < 202611:
        assert found  # 202511 depends on nltk, and its ASR imports reach g2p_en


def test_importing_espnet_prints_nothing() -> None:
    """The first import of ESPnet's ASR task (and the S2T ones after it) leaves stdout and stderr to espzoo: 202511
    notes the missing flash_attn on stdout, 202611 on stderr."""
    import subprocess

    script = (
        "from espzoo.models.espnet_env import import_asr_task; import_asr_task()\n"
        "from espzoo.tasks import S2T, S2T_CTC; from espzoo.models.espnet_env import task_class\n"
        "task_class(S2T); task_class(S2T_CTC)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert (done.stdout, done.stderr) == ("", "")


@pytest.mark.slow
def test_s2t_ctc_greedy_is_ctc_best_path_and_does_not_warn(tiny_s2t_ctc: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The greedy decoder, built from the tiny OWSM-CTC fixture, returns the collapsed argmax of its CTC head
    (computed here from the model) without a DeprecationWarning on either release."""
    import numpy as np
    import soundfile
    import torch
    import yaml

    from espzoo.models.espnet_env import import_asr_task

    import_asr_task()
    monkeypatch.chdir(tiny_s2t_ctc)  # the config names its stats file relative to the repo, as ESPnet's pack writes
    meta = yaml.safe_load((tiny_s2t_ctc / "meta.yaml").read_text())
    config = tiny_s2t_ctc / meta["yaml_files"]["s2t_train_config"]
    model = tiny_s2t_ctc / meta["files"]["s2t_model_file"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        s2t = compat.s2t_ctc_greedy(config, model, lang_sym="<eng>", task_sym="<asr>")
    conf = s2t.preprocessor_conf
    audio = SPEECH_ROOT / "en" / "test" / "audio"
    wave, _ = soundfile.read(sorted(audio.glob("*.flac"))[0], dtype="float32")
    wave = np.pad(wave, (0, max(0, int(conf["fs"] * conf["speech_length"]) - len(wave))))

    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        results = s2t(wave, lang_sym="<eng>", task_sym="<asr>")
    text, tokens, token_ids = results[0][:3]
    assert text is not None and tokens == s2t.converter.ids2tokens(token_ids)

    # The reference: the same encoder output through the CTC head, argmax, repeats collapsed, blanks dropped.
    with torch.no_grad():
        captured: list[torch.Tensor] = []
        hook = s2t.s2t_model.ctc.ctc_lo.register_forward_hook(lambda _m, _i, out: captured.append(out))
        try:
            s2t(wave, lang_sym="<eng>", task_sym="<asr>")
        finally:
            hook.remove()
    best, blank = captured[-1][0].argmax(-1).tolist(), s2t.s2t_model.blank_id
    collapsed = [t for i, t in enumerate(best) if t != blank and (i == 0 or t != best[i - 1])]
    assert collapsed and list(token_ids) == collapsed
