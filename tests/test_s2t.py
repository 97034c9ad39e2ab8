"""S2T (OWSM, OWSM-CTC) models: the rules in espzoo.models.s2t checked against ESPnet's own S2T code, a new language
token with every pretrained row kept, and the whole path as a user runs it: pull from the mirror, plan,
fine-tune 2 epochs on the shipped Spanish speech with --lang spa, evaluate, export, and ESPnet's own S2T
inference loading the export from its files alone and giving the same text."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from _hubtools import ESPZOO, SPEECH, client_env, espnet_transcripts, subset

from espzoo import errors, tasks
from espzoo.models import s2t as models_s2t
from espzoo.models.espnet_env import task_class
from espzoo.serve.server import MirrorServer
from espzoo.tasks import task_of
from espzoo.transfer import s2t_vocab as transfer_s2t_vocab

VOCAB_KEYS = {
    "s2t": {"decoder.embed.0.weight": 0, "decoder.output_layer.weight": 0, "decoder.output_layer.bias": 0,
            "ctc.ctc_lo.weight": 0, "ctc.ctc_lo.bias": 0},
    "s2t_ctc": {"embed.weight": 0, "ctc.ctc_lo.weight": 0, "ctc.ctc_lo.bias": 0,
                "encoder.conditioning_layer.weight": 1},
}


def espzoo(args: list[str], endpoint: str, hf_home: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([ESPZOO, *args], env=client_env(endpoint, hf_home), capture_output=True, text=True,
                          timeout=timeout)


# ------------------------------------------------------------------------------------------- rules, no model


def test_task_of_tells_the_tasks_apart() -> None:
    assert task_of({"encoder": "conformer", "model_conf": {"ctc_weight": 0.3}}) is tasks.ASR
    assert task_of({"preprocessor": "s2t", "model_conf": {}}) is tasks.S2T
    assert task_of({"model_conf": {"sym_na": "<na>"}}) is tasks.S2T
    assert task_of({"preprocessor": "s2t_ctc"}) is tasks.S2T_CTC
    assert task_of({"model": "espnet_ctc", "promptencoder": "transformer"}) is tasks.S2T_CTC
    transducer = {"encoder_conf": {"body_conf": [{"block_type": "conformer"}]}, "token_list": []}
    assert task_of(transducer) is tasks.ASR_TRANSDUCER
    families = [t.family for t in (tasks.ASR, tasks.ASR_TRANSDUCER, tasks.S2T, tasks.S2T_CTC)]
    assert families == ["asr", "asr", "s2t", "s2t"]


def test_training_text_forms() -> None:
    prompt = models_s2t.Prompt.for_language("es")
    assert prompt == models_s2t.Prompt("<spa>", "<asr>")
    config = {"preprocessor": "s2t", "preprocessor_conf": {"speech_length": 4, "last_time_symbol": "<4.00>"}}
    assert models_s2t.training_text("hola", 1.2345, prompt, config, tasks.S2T) == "<spa><asr><0.00> hola<1.22>"
    # Longer than the padded length: the end timestamp stays inside the block (speech is trimmed there too).
    assert models_s2t.training_text("hola", 9.0, prompt, config, tasks.S2T) == "<spa><asr><0.00> hola<4.00>"
    ctc_config = {"preprocessor": "s2t_ctc"}
    assert models_s2t.training_text("hola", 1.0, prompt, ctc_config, tasks.S2T_CTC) == "<spa><asr> hola"


def test_unknown_language_is_one_sentence() -> None:
    with pytest.raises(errors.S2TError, match="ISO 639-3"):
        transfer_s2t_vocab.language_token("not a language")


# ------------------------------------------------------------------------------------------- with the models


def test_espnet_preprocessor_reads_the_written_text(tiny_s2t: Path) -> None:
    """ESPnet's S2TPreprocessor (training mode, both time branches) on espzoo's text: <spa><asr> first, then
    timestamps or exactly one <notimestamps>, never two."""
    from espzoo.models.bundle import open_bundle

    task_class(tasks.S2T)
    from espnet2.train.preprocessor import S2TPreprocessor

    bundle = open_bundle(tiny_s2t)
    config = bundle.resolved_config()
    tokens = bundle.token_list
    pre = S2TPreprocessor(train=True, token_type="bpe", token_list=tokens, bpemodel=config["bpemodel"],
                          **config["preprocessor_conf"])
    text = models_s2t.training_text("el gato come", 1.5, models_s2t.Prompt("<spa>"), config, tasks.S2T)
    seen = set()
    for seed in range(20):
        np.random.seed(seed)
        out = pre("u", {"speech": np.zeros(16000, dtype=np.float32), "text": text, "text_prev": "<na>",
                        "text_ctc": "el gato come"})
        ids = [tokens[i] for i in out["text"]]
        assert ids[:2] == ["<spa>", "<asr>"]
        assert ids.count("<notimestamps>") <= 1
        seen.add(ids[2] == "<notimestamps>")
        assert ids[2] == "<notimestamps>" or models_s2t._TIME.match(ids[2])
    assert seen == {True, False}  # both branches of time_apply_prob ran


def test_add_user_symbols_keeps_every_piece_id(tiny_s2t: Path, tmp_path: Path) -> None:
    import sentencepiece as spm

    model = next(tiny_s2t.rglob("bpe.model"))
    new = transfer_s2t_vocab.add_user_symbols(model, ["<top>"], tmp_path / "bpe.model")
    old_sp, new_sp = spm.SentencePieceProcessor(model_file=str(model)), spm.SentencePieceProcessor(model_file=str(new))
    assert new_sp.get_piece_size() == old_sp.get_piece_size() + 1
    assert all(old_sp.id_to_piece(i) == new_sp.id_to_piece(i) for i in range(old_sp.get_piece_size()))
    assert "<top>" not in old_sp.encode("<top><asr> hola", out_type=str)
    assert new_sp.encode("<top><asr> hola", out_type=str)[1:3] == ["<top>", "<asr>"]


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["s2t", "s2t_ctc"])
@pytest.mark.parametrize("lang_init", ["spa", None])
def test_new_language_token_keeps_every_pretrained_row(
    variant: str, lang_init: str | None, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    import torch

    from espzoo.models.bundle import load_state_dict, open_bundle
    from espzoo.transfer.apply import apply_plan
    from espzoo.transfer.plan import TransferOptions, plan_transfer

    repo = request.getfixturevalue("tiny_s2t" if variant == "s2t" else "tiny_s2t_ctc")
    bundle = open_bundle(repo)
    old_tokens = bundle.token_list
    plan = plan_transfer(str(repo), TransferOptions(lang="top", lang_init=lang_init), workdir=tmp_path / "vocab")
    summary = plan.to_json()["summary"]
    assert summary["language"]["new_token"] == "<top>" and summary["language"]["index"] == len(old_tokens)
    assert plan.vocabulary.tokens == [*old_tokens, "<top>"]
    result = apply_plan(plan, tmp_path / "init")
    old, new = load_state_dict(bundle.checkpoint), torch.load(result.checkpoint, weights_only=True)
    assert set(new) == set(old)
    languages = [old_tokens.index(t) for t in models_s2t.language_tokens(old_tokens)]
    for key, value in new.items():
        axis = VOCAB_KEYS[variant].get(key)
        if axis is None:
            assert torch.equal(value, old[key]), key  # everything else loads as it was
            continue
        assert value.shape[axis] == old[key].shape[axis] + 1, key
        kept = value.narrow(axis, 0, len(old_tokens))
        assert torch.equal(kept, old[key]), f"{key}: a pretrained row changed"
        row = value.select(axis, len(old_tokens))
        if lang_init:
            expected = old[key].select(axis, old_tokens.index("<spa>"))
        else:
            expected = old[key].index_select(axis, torch.tensor(languages)).mean(dim=axis)
        assert torch.allclose(row, expected), key
    assert set(VOCAB_KEYS[variant]) <= set(new)
    config = yaml.safe_load(result.config.read_text())
    assert config["token_list"][-1] == "<top>"
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=config["bpemodel"])
    assert "<top>" in sp.encode("<top><asr> hola", out_type=str)


# ------------------------------------------------------------------------------------------- end to end


@pytest.fixture(params=["s2t", "s2t_ctc"])
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """(variant, endpoint, root): the mirror on 127.0.0.1 serving that tiny model as espzoo-test/tiny-owsm[-ctc]
    from the folder root."""
    variant = request.param
    root = tmp_path_factory.mktemp("s2t_mirror")
    name = "tiny-owsm" if variant == "s2t" else "tiny-owsm-ctc"
    repo = request.getfixturevalue("tiny_s2t" if variant == "s2t" else "tiny_s2t_ctc")
    shutil.copytree(repo, root / "espzoo-test" / name)
    server = MirrorServer(root)
    yield variant, server.start(), root
    server.stop()


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("es")
    return {
        "train": subset(SPEECH / "train", root / "train", 24),
        "dev": subset(SPEECH / "dev", root / "dev", 6),
        "test": subset(SPEECH / "test", root / "test", 4),
    }


@pytest.mark.slow
def test_pull_plan_finetune_evaluate_export(
    served: tuple[str, str, Path], data: dict[str, Path], tmp_path: Path
) -> None:
    variant, served_at, _ = served
    repo = "espzoo-test/tiny-owsm" if variant == "s2t" else "espzoo-test/tiny-owsm-ctc"
    hf_home, out, export = tmp_path / "hf", tmp_path / "exp", tmp_path / "export"
    pulled = espzoo(["pull", repo], served_at, hf_home)
    assert pulled.returncode == 0, pulled.stderr[-2000:]

    plan = espzoo(["plan", repo, "--lang", "spa", "--json"], served_at, hf_home)
    assert plan.returncode == 0, plan.stderr[-2000:]
    summary = json.loads(plan.stdout)["summary"]
    assert summary["language"]["new_token"] is None and summary["language"]["prompt"] == ["<spa>", "<asr>"]
    assert set(summary["actions"]) == {"load"}  # same vocabulary: every tensor loads

    ft = espzoo(["finetune", repo, "--train", str(data["train"]), "--valid", str(data["dev"]), "--out", str(out),
                 "--lang", "spa", "--max-epoch", "2", "--batch-bins", "400000", "--json"], served_at, hf_home)
    assert ft.returncode == 0, ft.stderr[-3000:]
    assert json.loads(ft.stdout)["epochs"] == 2
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["s2t"] == {"task": "<asr>", "lang": "<spa>", "espnet_task": variant}
    written = (out / "data" / "train_s2t" / "text").read_text(encoding="utf-8").splitlines()[0].split(maxsplit=1)[1]
    assert written.startswith("<spa><asr>") and (variant == "s2t_ctc" or "<0.00> " in written)
    train_conf = yaml.safe_load((out / "conf" / "train.yaml").read_text())
    assert task_of(train_conf).name == variant

    ev = espzoo(["evaluate", str(out), "--data", str(data["test"]), "--json", "--rows"], served_at, hf_home)
    assert ev.returncode == 0, ev.stderr[-3000:]
    report = json.loads(ev.stdout)
    assert report["utterances"] == 4 and 0.0 <= report["cer"]
    assert all("<" not in row["hypothesis"] for row in report["rows"])  # no prompt or timestamp left

    ex = espzoo(["export", str(out), "--out", str(export)], served_at, hf_home)
    assert ex.returncode == 0, ex.stderr[-3000:]
    meta = yaml.safe_load((export / "meta.yaml").read_text())
    assert set(meta["files"]) == {"s2t_model_file"} and set(meta["yaml_files"]) == {"s2t_train_config"}

    audio = sorted((SPEECH / "test" / "audio").glob("*.flac"))[:3]
    ours = espzoo(["transcribe", str(export), *map(str, audio), "--lang", "spa", "--json"], served_at, hf_home)
    assert ours.returncode == 0, ours.stderr[-3000:]
    texts = [r["text"] for r in json.loads(ours.stdout)]
    assert texts == espnet_transcripts(export, variant, "<spa>", audio)


@pytest.mark.slow
def test_vocab_extend_appends_pieces_and_keeps_every_old_row(tiny_s2t: Path, tmp_path: Path) -> None:
    import sentencepiece as spm
    import torch

    from espzoo.models.bundle import load_state_dict, open_bundle
    from espzoo.transfer.apply import apply_plan
    from espzoo.transfer.plan import TransferOptions, plan_transfer
    from espzoo.transfer.vocab import pretrained_vocabulary, spell

    text = subset(SPEECH / "train", tmp_path / "train", 40)
    bundle = open_bundle(tiny_s2t)
    old_tokens = bundle.token_list
    plan = plan_transfer(str(tiny_s2t), TransferOptions(vocab=f"extend:6:{text}"), workdir=tmp_path / "vocab")
    ext = plan.to_json()["summary"]["language"]["extension"]
    pieces = ext["pieces"]
    assert 0 < len(pieces) <= 6 and not set(pieces) & set(old_tokens)
    assert ext["coverage_after"] < ext["coverage_before"]
    assert plan.vocabulary.tokens == [*old_tokens, *pieces]
    old_sp = spm.SentencePieceProcessor(model_file=str(bundle.bpemodel))
    new_sp = spm.SentencePieceProcessor(model_file=str(plan.vocabulary.bpemodel))
    assert all(old_sp.id_to_piece(i) == new_sp.id_to_piece(i) for i in range(old_sp.get_piece_size()))
    lines = [line.split(maxsplit=1)[1] for line in (text / "text").read_text(encoding="utf-8").splitlines()]
    used = {p for line in lines for p in new_sp.encode(line, out_type=str)}
    assert set(pieces) <= used  # every new piece tokenizes the user's text

    result = apply_plan(plan, tmp_path / "init")
    old, new = load_state_dict(bundle.checkpoint), torch.load(result.checkpoint, weights_only=True)
    old_vocabulary = pretrained_vocabulary(old_tokens, "bpe", bundle.bpemodel)
    assert [t["token"] for t in plan.new_tokens()] == list(pieces)
    for key, axis in VOCAB_KEYS["s2t"].items():
        assert torch.equal(new[key].narrow(axis, 0, len(old_tokens)), old[key]), key
        for offset, piece in enumerate(pieces):  # composed: the old pieces that spell it (espzoo.transfer.vocab.spell)
            spelled = spell(piece, old_vocabulary) or tuple(range(len(old_tokens)))
            expected = old[key].index_select(axis, torch.tensor(spelled)).mean(dim=axis)
            assert torch.allclose(new[key].select(axis, len(old_tokens) + offset), expected), (key, piece)


def test_bad_language_options_are_one_sentence(tiny_s2t: Path, tiny_repo_char: Path, tmp_path: Path) -> None:
    from espzoo.errors import TransferError
    from espzoo.transfer.plan import TransferOptions, plan_transfer

    with pytest.raises(errors.S2TError, match="--lang-init needs --lang"):
        plan_transfer(str(tiny_s2t), TransferOptions(lang_init="spa"))
    with pytest.raises(errors.S2TError, match="no <deu> token"):
        plan_transfer(str(tiny_s2t), TransferOptions(lang="top", lang_init="deu"), workdir=tmp_path)
    with pytest.raises(errors.S2TError, match="already knows <spa>"):
        plan_transfer(str(tiny_s2t), TransferOptions(lang="es", lang_init="eng"))
    with pytest.raises(errors.S2TError, match="extend:N"):
        plan_transfer(str(tiny_s2t), TransferOptions(vocab="bpe:30"))
    with pytest.raises(TransferError, match="applies to S2T"):
        plan_transfer(str(tiny_repo_char), TransferOptions(lang="spa"))
    proc = subprocess.run([ESPZOO, "plan", str(tiny_s2t), "--lang", "no such language"], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr and "ISO 639-3" in proc.stderr


@pytest.mark.slow
def test_new_language_finetune_decodes_with_its_token(
    served: tuple[str, str, Path], data: dict[str, Path], tmp_path: Path
) -> None:
    """`--lang top` (a language the model lacks) through every command: the fine-tune adds <top>; evaluate and
    transcribe of OUT, of its export and of the export pulled back from the mirror prompt with <top> unasked
    (from the run's provenance); ESPnet's own S2T inference loads the export and decodes with lang_sym="<top>"
    to the same text."""
    variant, served_at, root = served
    repo = "espzoo-test/tiny-owsm" if variant == "s2t" else "espzoo-test/tiny-owsm-ctc"
    hf_home, out, export = tmp_path / "hf", tmp_path / "exp", tmp_path / "export"
    ft = espzoo(["finetune", repo, "--train", str(data["train"]), "--valid", str(data["dev"]), "--out", str(out),
                 "--lang", "top", "--lang-init", "spa", "--max-epoch", "1", "--batch-bins", "400000", "--json"],
                served_at, hf_home)
    assert ft.returncode == 0, ft.stderr[-3000:]
    assert json.loads((out / "provenance.json").read_text())["s2t"]["lang"] == "<top>"
    assert yaml.safe_load((out / "config.yaml").read_text())["token_list"][-1] == "<top>"
    written = (out / "data" / "train_s2t" / "text").read_text(encoding="utf-8").splitlines()[0].split(maxsplit=1)[1]
    assert written.startswith("<top><asr>")

    ev = espzoo(["evaluate", str(out), "--data", str(data["test"]), "--json", "--rows"], served_at, hf_home)
    assert ev.returncode == 0, ev.stderr[-3000:]
    report = json.loads(ev.stdout)
    assert report["prompt"] == ["<top>", "<asr>"] and report["utterances"] == 4
    assert all("<" not in row["hypothesis"] for row in report["rows"])

    ex = espzoo(["export", str(out), "--out", str(export)], served_at, hf_home)
    assert ex.returncode == 0, ex.stderr[-3000:]
    audio = sorted((SPEECH / "test" / "audio").glob("*.flac"))[:3]
    ours = espzoo(["transcribe", str(export), *map(str, audio), "--json"], served_at, hf_home)  # no --lang
    assert ours.returncode == 0, ours.stderr[-3000:]
    texts = [r["text"] for r in json.loads(ours.stdout)]
    assert texts == espnet_transcripts(export, variant, "<top>", audio)
    assert all("<" not in t for t in texts)

    # The export served by the mirror and pulled back by repo id keeps its prompt (its espzoo record travels).
    shutil.copytree(export, root / "espzoo-test" / f"{repo.split('/')[1]}-top")
    pulled = espzoo(["evaluate", f"{repo}-top", "--data", str(data["test"]), "--json"], served_at, hf_home)
    assert pulled.returncode == 0, pulled.stderr[-3000:]
    assert json.loads(pulled.stdout)["prompt"] == ["<top>", "<asr>"]


# ------------------------------------------------------------------------------------------- speech translation


def test_translation_prompt_and_ctc_text() -> None:
    assert models_s2t.translation_task("en") == "<st_eng>" and models_s2t.translation_task("English") == "<st_eng>"
    st = models_s2t.Prompt.for_language("spa", models_s2t.translation_task("eng"))
    assert st.translates and not models_s2t.Prompt("<spa>").translates
    config = {"preprocessor": "s2t", "preprocessor_conf": {"speech_length": 4, "last_time_symbol": "<4.00>"}}
    assert models_s2t.training_text("the cat", 1.0, st, config, tasks.S2T) == "<spa><st_eng><0.00> the cat<1.00>"
    assert models_s2t.ctc_text("the cat", st, tasks.S2T) == "<na>"  # no source transcript: out of the CTC loss
    assert models_s2t.ctc_text("the cat", st, tasks.S2T_CTC) == "the cat"  # OWSM-CTC's CTC output is the translation
    assert models_s2t.ctc_text("el gato", models_s2t.Prompt("<spa>"), tasks.S2T) == "el gato"


def test_translation_plan_and_espnet_reads_its_text(tiny_s2t: Path, tiny_repo_char: Path, tmp_path: Path) -> None:
    """--lang spa --target-lang eng: the prompt <spa><st_eng>, which ESPnet's S2TPreprocessor reads as language and
    task; a target the model cannot translate into, or --target-lang without --lang, is one sentence."""
    from espzoo.errors import TransferError
    from espzoo.models.bundle import open_bundle
    from espzoo.transfer.plan import TransferOptions, plan_transfer

    plan = plan_transfer(str(tiny_s2t), TransferOptions(lang="spa", target_lang="eng"), workdir=tmp_path)
    assert plan.to_json()["summary"]["language"]["prompt"] == ["<spa>", "<st_eng>"]
    assert plan.vocabulary.tokens == open_bundle(tiny_s2t).token_list  # nothing added
    with pytest.raises(errors.S2TError, match=r"no task token <st_deu>.*<st_eng>"):
        plan_transfer(str(tiny_s2t), TransferOptions(lang="spa", target_lang="deu"), workdir=tmp_path)
    with pytest.raises(errors.S2TError, match="--target-lang needs --lang"):
        plan_transfer(str(tiny_s2t), TransferOptions(target_lang="eng"), workdir=tmp_path)
    with pytest.raises(TransferError, match="applies to S2T"):
        plan_transfer(str(tiny_repo_char), TransferOptions(target_lang="eng"))

    task_class(tasks.S2T)
    from espnet2.train.preprocessor import S2TPreprocessor

    bundle = open_bundle(tiny_s2t)
    config = bundle.resolved_config()
    pre = S2TPreprocessor(train=True, token_type="bpe", token_list=bundle.token_list, bpemodel=config["bpemodel"],
                          **config["preprocessor_conf"])
    prompt = plan.language.prompt
    np.random.seed(0)
    out = pre("u", {"speech": np.zeros(16000, dtype=np.float32), "text": models_s2t.training_text(
        "the cat eats", 1.0, prompt, config, tasks.S2T), "text_prev": "<na>", "text_ctc": models_s2t.ctc_text(
        "the cat eats", prompt, tasks.S2T)})
    assert [bundle.token_list[i] for i in out["text"][:2]] == ["<spa>", "<st_eng>"]
    # ESPnetS2TModel._calc_ctc_loss drops a sample whose text_ctc holds <na> (sentencepiece puts a "▁" before it)
    assert bundle.token_list.index("<na>") in out["text_ctc"].tolist()


@pytest.mark.slow
def test_translation_finetune_and_evaluate_prompt_with_the_st_task(
    tiny_s2t: Path, data: dict[str, Path], tmp_path: Path
) -> None:
    """finetune --lang spa --target-lang eng (the shipped Spanish text stands in for a translation): ESPnet trains
    on <spa><st_eng> text with text.ctc <na>, and evaluate decodes OUT with that prompt unasked."""
    out = tmp_path / "exp"
    ft = espzoo(["finetune", str(tiny_s2t), "--train", str(data["train"]), "--valid", str(data["dev"]), "--out",
                 str(out), "--lang", "spa", "--target-lang", "eng", "--max-epoch", "1", "--batch-bins", "400000",
                 "--json"], "http://127.0.0.1:9", tmp_path / "hf")
    assert ft.returncode == 0, ft.stderr[-3000:]
    assert json.loads((out / "provenance.json").read_text())["s2t"]["task"] == "<st_eng>"
    first = (out / "data" / "train_s2t" / "text").read_text(encoding="utf-8").splitlines()[0].split(maxsplit=1)[1]
    assert first.startswith("<spa><st_eng><0.00> ")
    assert {line.split(maxsplit=1)[1] for line in (out / "data" / "train_s2t" / "text.ctc").read_text().splitlines()
            } == {"<na>"}
    ev = espzoo(["evaluate", str(out), "--data", str(data["test"]), "--json"], "http://127.0.0.1:9", tmp_path / "hf")
    assert ev.returncode == 0, ev.stderr[-3000:]
    assert json.loads(ev.stdout)["prompt"] == ["<spa>", "<st_eng>"]
