"""Language models (models.lm, train.lm_train), end to end with real parts: the shipped English char model is
fine-tuned on the shipped Spanish speech for a few epochs (under-trained on purpose) with `finetune --lm-text`,
which trains an LM on the new BPE tokens with ESPnet's own LM task; the LM lowers the Spanish test WER; the OUT is
exported, served by espzoo's mirror on 127.0.0.1, pulled with the real huggingface_hub client and decoded again;
ESPnet's own Speech2Text loads the exported LM."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from _hubtools import ESPZOO, SPEECH, client_env
from _paths import REPO_ROOT

from espzoo.errors import LanguageModelError
from espzoo.serve.server import MirrorServer

PRETRAINED = REPO_ROOT / "zoo" / "assets" / "pretrained" / "espzoo-demo" / "tiny-en-char"
TEST = SPEECH / "test"
REPO = "espzoo-test/es-with-lm"
EPOCHS = 12  # under-trained: CER ~19%, WER ~48% on the shipped test set (the demo's 40 epochs reach ~12% CER)


def run(args: list[str], env: dict[str, str], timeout: float = 2400) -> subprocess.CompletedProcess:
    return subprocess.run([ESPZOO, *args], env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    home = tmp_path_factory.mktemp("lm_home")
    return client_env("http://127.0.0.1:9", home / "hf", ESPZOO_HOME=str(home / "espzoo"), COLUMNS="200")


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory, env: dict[str, str]) -> Path:
    """A real fine-tune (new Spanish BPE vocabulary) with --lm-text: OUT/lm trained by ESPnet's lm_train."""
    out = tmp_path_factory.mktemp("lm") / "exp"
    done = run(["finetune", str(PRETRAINED), "--train", str(SPEECH / "train"), "--valid", str(SPEECH / "dev"),
                "--vocab", "bpe:60", "--max-epoch", str(EPOCHS), "--lr", "8e-3", "--batch-bins", "200000",
                "--out", str(out), "--lm-text", str(SPEECH / "train" / "text"), "--json"], env)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert summary["lm"]["lines"] > 50 and summary["lm"]["epochs"] == 20 and summary["lm"]["init"] is None
    return out


@pytest.fixture(scope="module")
def sweep(out: Path, env: dict[str, str]) -> dict:
    done = run(["evaluate", str(out), "--data", str(TEST), "--lm-weight", "0,0.3", "--jobs", "1", "--json"], env)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def test_the_lm_is_espnets_on_the_models_own_tokens(out: Path) -> None:
    lm = yaml.safe_load((out / "lm" / "config.yaml").read_text(encoding="utf-8"))
    asr = yaml.safe_load((out / "config.yaml").read_text(encoding="utf-8"))
    assert lm["lm"] == "seq_rnn" and lm["token_list"] == asr["token_list"] and lm["token_type"] == "bpe"
    assert yaml.safe_load((out / "lm" / "decode.yaml").read_text())["lm_weight"] == 0.3
    from espzoo.models.bundle import load_state_dict

    state = load_state_dict(out / "lm" / "model.pth")  # plain tensors: a weights-only load accepts it
    assert state["lm.decoder.weight"].shape[0] == len(asr["token_list"])
    assert "epoch results" in (out / "lm" / "train.log").read_text(encoding="utf-8")  # ESPnet's trainer ran


def _vocab_size(out: Path) -> int:
    return len(yaml.safe_load((out / "config.yaml").read_text(encoding="utf-8"))["token_list"])


def test_the_lm_lowers_the_spanish_test_wer(out: Path, sweep: dict) -> None:
    without, with_lm = sweep["sweep"]
    assert without["lm_weight"] == 0 and "lm" not in without  # weight 0: decoded exactly as without an LM
    assert with_lm["lm"]["weight"] == 0.3 and with_lm["lm"]["vocab_size"] == _vocab_size(out)
    print(f"\nSpanish test, {EPOCHS}-epoch fine-tune: WER {without['wer']:.1%} -> {with_lm['wer']:.1%}, "
          f"CER {without['cer']:.1%} -> {with_lm['cer']:.1%} with the LM at 0.3")
    assert with_lm["wer"] < without["wer"] - 0.05, (without["wer"], with_lm["wer"])
    assert sweep["best"]["lm_weight"] == 0.3


def test_lm_none_decodes_as_before(out: Path, sweep: dict, env: dict[str, str]) -> None:
    done = run(["evaluate", str(out), "--data", str(TEST), "--lm", "none", "--jobs", "1", "--json"], env)
    assert done.returncode == 0, done.stderr[-2000:]
    plain = json.loads(done.stdout)
    assert "lm" not in plain and plain["wer"] == sweep["sweep"][0]["wer"]
    assert [u["hyp"] for u in plain["per_utterance"]] == [u["hyp"] for u in sweep["sweep"][0]["per_utterance"]]


def test_ctc_only_decoding_fuses_the_lm_in_a_beam_search(out: Path, tmp_path: Path) -> None:
    """A CTC-only model (ctc_weight 1) decodes greedily without an LM, and by CTC prefix beam search with it."""
    from espzoo.decode.recognizer import DecodeOptions
    from espzoo.decode.report import evaluate

    ctc = tmp_path / "ctc"
    shutil.copytree(out, ctc, ignore=shutil.ignore_patterns("eval", "espnet", "data"))
    config = yaml.safe_load((ctc / "config.yaml").read_text(encoding="utf-8"))
    config["model_conf"]["ctc_weight"] = 1.0
    (ctc / "config.yaml").write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    greedy = evaluate(ctc, TEST, tmp_path / "a", options=DecodeOptions(lm="none", jobs=1))
    fused = evaluate(ctc, TEST, tmp_path / "b", options=DecodeOptions(jobs=1))
    assert greedy.decode == "ctc-greedy" and greedy.lm is None
    assert fused.decode == "beam" and fused.lm is not None and fused.ctc_weight == 1.0
    print(f"\nCTC only: greedy WER {greedy.wer.rate:.1%}, CTC + LM 0.3 {fused.wer.rate:.1%}")
    assert fused.wer.rate < greedy.wer.rate


def test_export_mirror_pull_evaluate_gives_the_outs_wer(out: Path, sweep: dict, env: dict[str, str],
                                                        tmp_path: Path) -> None:
    from espzoo.publish.hub_layout import ExportOptions, export

    root = tmp_path / "mirror"
    exported = export(out, root / REPO, ExportOptions(repo_id=REPO))
    meta = yaml.safe_load((exported / "meta.yaml").read_text(encoding="utf-8"))
    assert meta["files"]["lm_file"].startswith("exp/lm_train_") and meta["yaml_files"]["lm_train_config"]
    assert "### Language model" in (exported / "README.md").read_text(encoding="utf-8")
    server = MirrorServer(root)
    url = server.start()
    try:
        hub_env = dict(env, HF_ENDPOINT=url, HF_HOME=str(tmp_path / "hf"))
        pulled = run(["pull", REPO, "--json"], hub_env)
        assert pulled.returncode == 0, pulled.stderr
        assert meta["files"]["lm_file"] in json.loads(pulled.stdout)["files"]
        shown = run(["info", REPO, "--json"], hub_env)
        assert "seq_rnn" in json.loads(shown.stdout)["pulled"]["language_model"]
        evaluated = run(["evaluate", REPO, "--data", str(TEST), "--jobs", "1", "--json"], hub_env)
        assert evaluated.returncode == 0, evaluated.stderr[-2000:]
        bare_env = dict(hub_env, HF_HOME=str(tmp_path / "hf_bare"))
        bare = run(["pull", REPO, "--no-lm", "--json"], bare_env)
        assert bare.returncode == 0 and not any("lm_train" in f for f in json.loads(bare.stdout)["files"])
    finally:
        server.stop()
    result = json.loads(evaluated.stdout)
    with_lm = sweep["sweep"][1]
    assert result["lm"]["weight"] == 0.3 and result["lm"]["file"].endswith(meta["files"]["lm_file"])
    assert result["wer"] == with_lm["wer"] and result["cer"] == with_lm["cer"]
    assert [u["hyp"] for u in result["per_utterance"]] == [u["hyp"] for u in with_lm["per_utterance"]]
    # The repo's LM changes the output: --lm none gives the LM-free hypotheses.
    assert [u["hyp"] for u in result["per_utterance"]] != [u["hyp"] for u in sweep["sweep"][0]["per_utterance"]]


def test_espnets_speech2text_loads_the_exported_lm(out: Path, tmp_path: Path, monkeypatch) -> None:
    from espnet2.bin.asr_inference import Speech2Text

    from espzoo.decode.recognizer import DecodeOptions
    from espzoo.decode.runner import load_audio, transcribe
    from espzoo.publish.hub_layout import ExportOptions, export

    exported = export(out, tmp_path / "repo", ExportOptions(repo_id=REPO))
    meta = yaml.safe_load((exported / "meta.yaml").read_text(encoding="utf-8"))
    first = (TEST / "wav.scp").read_text(encoding="utf-8").splitlines()[0].split(maxsplit=1)[1]
    wav = (TEST / first).resolve()
    ours = transcribe(out, [wav], options=DecodeOptions(jobs=1))[0]
    monkeypatch.chdir(exported)
    speech2text = Speech2Text(
        asr_train_config=meta["yaml_files"]["asr_train_config"], asr_model_file=meta["files"]["asr_model_file"],
        lm_train_config=meta["yaml_files"]["lm_train_config"], lm_file=meta["files"]["lm_file"], lm_weight=0.3,
        beam_size=4, ctc_weight=yaml.safe_load(Path(meta["yaml_files"]["asr_train_config"]).read_text())[
            "model_conf"]["ctc_weight"], nbest=1,
    )
    assert "lm" in speech2text.beam_search.full_scorers
    text = speech2text(load_audio(wav, 16000))[0][0]
    assert text == ours


def test_lm_train_fine_tunes_a_models_own_lm(out: Path, tmp_path: Path, env: dict[str, str]) -> None:
    """Given a model whose LM has its tokens, `lm train` continues that LM (ESPnet's --init_param) by default."""
    done = run(["lm", "train", str(out), "--text", str(SPEECH / "dev" / "text"), "--out", str(tmp_path / "lm2"),
                "--epochs", "2", "--json"], env)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert result["init"] == str(out / "lm") and result["epochs"] == 2
    scratch = run(["lm", "train", str(out), "--text", str(SPEECH / "dev" / "text"), "--out", str(tmp_path / "lm3"),
                   "--epochs", "2", "--init", "none", "--json"], env)
    assert scratch.returncode == 0 and json.loads(scratch.stdout)["init"] is None
    # Fine-tuned from the trained LM, it starts far better than from scratch on the same text.
    assert result["perplexity"] < json.loads(scratch.stdout)["perplexity"]


# ---------------------------------------------------------------------------------------------------- bad input


def test_text_with_no_usable_tokens_is_one_sentence(out: Path, tmp_path: Path, env: dict[str, str]) -> None:
    text = tmp_path / "symbols.txt"
    text.write_text("☃☃☃ ∑∑\n☃ ☃\n", encoding="utf-8")
    done = run(["lm", "train", str(out), "--text", str(text)], env)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "no tokens of the model's vocabulary" in done.stderr and len(done.stderr.strip().splitlines()) <= 2


def test_an_lm_of_another_vocabulary_is_refused_naming_both_sizes(out: Path, tmp_path: Path,
                                                                  env: dict[str, str]) -> None:
    other = tmp_path / "other_lm"
    shutil.copytree(out / "lm", other)
    config = yaml.safe_load((other / "config.yaml").read_text(encoding="utf-8"))
    config["token_list"] = config["token_list"][:40]
    (other / "config.yaml").write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    done = run(["evaluate", str(out), "--data", str(TEST), "--lm", str(other), "--jobs", "1"], env)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "40 tokens" in done.stderr and f"has {_vocab_size(out)}" in done.stderr


@pytest.mark.parametrize("weight", ["-1", "abc", "0.3,-0.5", "nan"])
def test_a_bad_lm_weight_is_one_sentence(out: Path, env: dict[str, str], weight: str) -> None:
    done = run(["evaluate", str(out), "--data", str(TEST), f"--lm-weight={weight}"], env, timeout=120)
    assert done.returncode != 0 and "Traceback" not in done.stderr and "--lm-weight" in done.stderr


def test_library_checks() -> None:
    from espzoo.models.lm import check_weight, parse_weights
    from espzoo.train.lm_train import LMTrainOptions

    assert parse_weights("0, 0.1,0.3") == (0.0, 0.1, 0.3)
    with pytest.raises(LanguageModelError, match="out of range"):
        check_weight(-1)
    with pytest.raises(LanguageModelError, match="lstm, transformer"):
        LMTrainOptions(arch="gru")
    with pytest.raises(LanguageModelError, match="no such folder"):
        from espzoo.models.lm import open_lm

        open_lm("/nonexistent/lm")


def test_an_lm_weight_for_a_model_without_an_lm_is_one_sentence(tmp_path: Path) -> None:
    from _tiny_out import build_tiny_out

    from espzoo.decode.recognizer import DecodeOptions
    from espzoo.decode.report import evaluate
    from espzoo.errors import EvaluateError

    plain = build_tiny_out(tmp_path / "out")
    with pytest.raises(EvaluateError, match="needs an LM"):
        evaluate(plain, TEST, tmp_path / "eval", options=DecodeOptions(lm_weight=0.3, jobs=1))
