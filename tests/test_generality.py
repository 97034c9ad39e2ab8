"""Every model family plans a new vocabulary (`plan --vocab bpe:N`): one small ESPnet-built model per family.

The pass/fail table is printed (pytest -s) for the record; the test fails naming every family that fails.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import yaml
from _models import (
    FAMILIES,
    family_config,
    family_experiment,
)
from _paths import SPEECH_ROOT

from espzoo.errors import MissingPackageError, ModelConfigError
from espzoo.models.build import build_model, training_args
from espzoo.models.upstreams import install_bridges, training_gap
from espzoo.train import asr_train as _asr_train
from espzoo.transfer.plan import TransferOptions, plan_transfer
from espzoo.transfer.vocab import read_texts

SPEECH = SPEECH_ROOT
ES_TEXT = SPEECH / "es" / "train" / "text"


def test_every_family_plans_a_new_bpe_vocabulary(tmp_path: Path) -> None:
    texts = read_texts(ES_TEXT)
    outcome: dict[str, str] = {}
    for family in [*FAMILIES, "whisper", "s3prl_wavlm", "s3prl_hubert", "s3prl_xls_r"]:
        folder = tmp_path / family
        folder.mkdir()
        try:
            exp = family_experiment(family, folder)
            plan = plan_transfer(str(exp), TransferOptions(vocab="bpe:40"), texts=texts, workdir=folder / "vocab")
            actions = {r.action for r in plan.rows}
            transplanted = sum(r.action == "transplant" for r in plan.rows)
            assert actions <= {"load", "transplant"} and transplanted >= 2, actions
            outcome[family] = f"pass ({transplanted} vocabulary tensors transplanted)"
        except Exception as err:  # noqa: BLE001 (the table records every family's failure, whatever it is)
            outcome[family] = f"FAIL {type(err).__name__}: {str(err)[:160]}"
    print("\nfamily table (plan --vocab bpe:40):")
    for family, result in outcome.items():
        print(f"  {family:22s} {result}")
    assert [f for f, r in outcome.items() if r.startswith("FAIL")] == []


def test_config_strings_go_through_espnets_option_types(tmp_path: Path) -> None:
    """`decoder: none` in a recipe's YAML is None to ESPnet (argparse types a string default): a CTC-only model."""
    config = family_config("ctc_only", tmp_path)
    config["decoder"] = "none"
    config["config"] = "conf/train_asr.yaml"  # as ESPnet dumps it; ESPnet ignores it in a config file
    assert build_model(config, device="meta").decoder is None


@pytest.mark.parametrize(("override", "named"), [
    ({"encoder": "mamba"}, "has no encoder 'mamba'"),
    ({"model_conf": {"ctc_weight": 0.3, "use_bayes_risk_transducer": True}},
     "has no option 'use_bayes_risk_transducer' for ESPnetASRModel"),
])
def test_a_config_of_another_espnet_version_names_what_is_missing(tmp_path: Path, override: dict, named: str) -> None:
    config = {**family_config("conformer", tmp_path), **override}
    with pytest.raises(ModelConfigError, match=rf"The installed ESPnet \S+ {named}, .*version it was trained with"):
        build_model(config, device="meta")


def test_a_misspelt_option_is_named_with_the_option_it_misspells(tmp_path: Path) -> None:
    """egs2/ami's train_asr_rnn.yaml sets `hideen_size`: ESPnet itself refuses it; the sentence names the fix."""
    config = {**family_config("rnn", tmp_path)}
    config["encoder_conf"] = {**config["encoder_conf"], "hideen_size": 8}
    with pytest.raises(ModelConfigError, match=r"no option 'hideen_size' for \w+, .*a misspelling of 'hidden_size'"):
        build_model(config, device="meta")


def _k2_missing() -> bool:
    install_bridges()
    return getattr(sys.modules.get("k2"), "__espzoo_stand_in__", None) is not None


def test_a_bayes_risk_ctc_model_builds_without_k2_and_only_training_asks_for_it(tmp_path: Path, capsys) -> None:
    """Bayes-risk CTC (`ctc_type: brctc`, egs2/aishell's brctc configs): ESPnet imports k2 while building the CTC,
    but only its loss uses k2. Without k2 the model builds with plain CTC's parameters (plan) and ESPnet decodes it;
    its loss, and a training run, say in one sentence that k2 is missing."""
    config = {**family_config("conformer", tmp_path), "ctc_conf": {"ctc_type": "brctc"}}
    model = build_model(config, device="meta")
    plain = build_model({**config, "ctc_conf": {}}, device="meta")
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in plain.state_dict().items()}
    if not _k2_missing():  # a machine with k2: nothing stands in, and training needs nothing more
        assert training_gap(config) is None
        return
    # ESPnet's own decoder loads and decodes it (CTC prefix scoring: plain CTC's log-softmax)
    torch.manual_seed(0)
    torch.save(build_model(config).state_dict(), tmp_path / "model.pth")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(vars(training_args(config))))
    from espnet2.bin.asr_inference import Speech2Text

    speech2text = Speech2Text(str(tmp_path / "config.yaml"), str(tmp_path / "model.pth"), ctc_weight=0.3,
                              beam_size=2, maxlenratio=0.1)
    assert speech2text.asr_model.ctc.ctc_type == "brctc" and isinstance(speech2text(torch.randn(8000))[0][0], str)
    logits = torch.randn(1, 8, len(config["token_list"]))
    with pytest.raises(MissingPackageError, match=r"needs the package k2 .*pip install k2"):
        model.ctc.loss_fn(logits.transpose(0, 1), torch.tensor([[3, 4]]), torch.tensor([8]), torch.tensor([2]))
    assert training_gap({**config, "ctc_conf": {}}) is None
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(SystemExit) as exit_info:  # the training child refuses before ESPnet starts
        _asr_train.main(["--config", str(tmp_path / "train.yaml"), "--output_dir", str(tmp_path / "exp")])
    assert exit_info.value.code == 2
    refusal = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith(_asr_train.REFUSAL)]
    assert len(refusal) == 1 and "Bayes-risk CTC" in refusal[0] and "k2" in refusal[0]


def test_a_hugging_face_post_encoder_is_built_from_its_config_alone(tmp_path: Path, monkeypatch) -> None:
    """`postencoder: hugging_face_transformers` (egs2/slurp's BERT configs): ESPnet calls AutoModel.from_pretrained,
    which downloads the weights; espzoo builds it from config.json (random weights, which the checkpoint replaces),
    and without a config.json offline it is one sentence saying how to fetch it."""
    transformers = pytest.importorskip("transformers")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    bert = tmp_path / "tiny-bert"
    transformers.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                            vocab_size=50).save_pretrained(bert)
    config = {**family_config("conformer", tmp_path), "postencoder": "hugging_face_transformers",
              "postencoder_conf": {"model_name_or_path": str(bert)}}
    model = build_model(config, device="meta")
    layers = {k.split(".")[3] for k in model.state_dict() if k.startswith("postencoder.transformer.layer.")}
    assert layers == {"0", "1"} and model.postencoder.transformer.config.hidden_size == 32
    config["postencoder_conf"] = {"model_name_or_path": str(tmp_path / "not-there")}
    with pytest.raises(ModelConfigError, match=r"post-encoder is the Hugging Face model .*config\.json.*hf download"):
        build_model(config, device="meta")


def test_every_sampled_egs2_config_names_its_source_and_is_counted_once_in_its_population() -> None:
    """bench/egs2_coverage.py's input: each sampled config (model keys only) names its espnet/espnet path and commit,
    is marked sampled in INDEX.tsv, and no two sampled configs have the same model keys (the duplicates rule)."""
    import re

    folder = Path(__file__).resolve().parent / "configs" / "egs2"
    rows = [line.split("\t") for line in (folder / "INDEX.tsv").read_text().splitlines()
            if not line.startswith(("#", "path\t"))]
    paths = [row[0] for row in rows]
    assert len(paths) == len(set(paths))
    sampled = {f"{row[0].split('/')[1]}__{Path(row[0]).stem}": row[0] for row in rows if row[2:3] == ["yes"]}
    files = sorted(folder.glob("*.yaml"))
    assert {f.stem for f in files} == set(sampled)
    seen: dict[str, str] = {}
    for file in files:
        source = re.fullmatch(r"# source: espnet/espnet (\S+) @ ([0-9a-f]{40}) \(model keys\)",
                              file.read_text().splitlines()[0])
        # INDEX.tsv names a config in both conf/ and conf/tuning/ (the recipe links them) by its conf/ path
        assert source and source.group(1).replace("/conf/tuning/", "/conf/") == sampled[file.stem].replace(
            "/conf/tuning/", "/conf/"), file.name
        keys = repr(sorted(yaml.safe_load(file.read_text()).items()))
        assert keys not in seen, f"{file.stem} has the model keys of {seen.get(keys)}"
        seen[keys] = file.stem
