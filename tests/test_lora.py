"""LoRA (espzoo.lora): a real ESPnet fine-tune of the tiny model served by the mirror, with adapters of rank 4 on
a frozen base, resumed, exported merged and adapter-only, decoded both ways and pulled back through the mirror."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
import yaml
from _hubtools import ESPZOO, client_env
from _tiny_out import audio_files, build_tiny_out
from test_finetune import SPEECH, subset

from espzoo.lora import AdapterConfig, AdapterError, LoRALinear, apply_adapters, merged_state
from espzoo.mirror import MirrorServer

REPO = "espzoo-test/tiny-char"
RANK, ALPHA = 4, 8.0
OFFLINE = "http://127.0.0.1:9"


def espzoo(args: list[str], endpoint: str, hf_home: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([ESPZOO, *args], env=client_env(endpoint, hf_home), capture_output=True, text=True,
                          timeout=timeout)


def load(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)


# ---------------------------------------------------------------------------------------------------- the layer


def test_layer_starts_as_its_base_and_the_base_gets_no_gradient() -> None:
    torch.manual_seed(0)
    base = torch.nn.Linear(6, 5)
    reference = base.weight.detach().clone()
    model = torch.nn.Sequential()
    model.add_module("encoder", torch.nn.ModuleDict({"attn": torch.nn.ModuleDict({"linear_q": base})}))
    summary = apply_adapters(model, AdapterConfig(rank=2, targets=("linear_q",)))
    layer = model.encoder.attn.linear_q
    assert isinstance(layer, LoRALinear) and isinstance(layer, torch.nn.Linear)
    assert summary.targets == ["encoder.attn.linear_q"] and summary.trainable == 2 * 6 + 5 * 2
    x = torch.randn(3, 6)
    assert torch.equal(layer(x), torch.nn.functional.linear(x, reference, base.bias))  # B = 0: the base exactly
    layer(x).sum().backward()
    assert layer.weight.grad is None and layer.bias.grad is None  # frozen: no weight gradient computed
    assert layer.lora_B.grad is not None and layer.lora_B.grad.abs().sum() > 0
    assert set(model.state_dict()) == {"encoder.attn.linear_q.weight", "encoder.attn.linear_q.bias",
                                       "encoder.attn.linear_q.lora_A", "encoder.attn.linear_q.lora_B"}


def test_merging_twice_is_impossible() -> None:
    torch.manual_seed(0)
    layer = LoRALinear(torch.nn.Linear(4, 3), rank=2, scaling=2.0)
    torch.nn.init.normal_(layer.lora_B)
    x = torch.randn(2, 4)
    adapted = layer(x)
    state = layer.state_dict()
    layer.merge()
    assert layer.merged and torch.allclose(layer(x), adapted, atol=1e-6)
    with pytest.raises(AdapterError, match="already merged"):
        layer.merge()
    with pytest.raises(AdapterError, match="cannot be saved"):  # weight + delta beside A and B: #6107
        layer.state_dict()
    layer.unmerge()
    assert torch.allclose(layer.weight, state["weight"], atol=1e-6)
    config = AdapterConfig(rank=2, alpha=4.0)
    merged = merged_state({f"m.{k}": v for k, v in state.items()}, config)
    assert set(merged) == {"m.weight", "m.bias"}
    assert torch.allclose(merged["m.weight"], state["weight"] + state["lora_B"] @ state["lora_A"] * 2.0)
    with pytest.raises(AdapterError, match="already merged"):
        merged_state(merged, config)


def test_an_adapter_keeps_what_its_base_does_not_have(tmp_path: Path) -> None:
    """adapter.pth: the adapters, what trained fully, and whatever the plan did not load unchanged from the base
    (a new vocabulary's transplanted rows, new normalization stats), so that base + adapter is the model."""
    from espzoo.lora import adapter_state, loaded_from_base

    state = {k: torch.zeros(1) for k in ("enc.w.weight", "enc.w.lora_A", "enc.w.lora_B", "ctc.ctc_lo.weight",
                                         "decoder.embed.0.weight", "normalize.mean")}
    rows = [{"target_key": "enc.w.weight", "action": "load", "spec": 0, "source_key": "enc.w.weight"},
            {"target_key": "ctc.ctc_lo.weight", "action": "load", "spec": 0, "source_key": "ctc.ctc_lo.weight"},
            {"target_key": "decoder.embed.0.weight", "action": "transplant", "spec": 0,
             "source_key": "decoder.embed.0.weight"},
            {"target_key": "normalize.mean", "action": "exclude", "spec": 0, "source_key": "normalize.mean"}]
    (tmp_path / "plan.json").write_text(json.dumps({"rows": rows}))
    from_base = loaded_from_base(tmp_path / "plan.json")
    kept = adapter_state(state, AdapterConfig(rank=1, train_also=("ctc.ctc_lo",)), from_base)
    assert set(kept) == {"enc.w.lora_A", "enc.w.lora_B", "ctc.ctc_lo.weight", "decoder.embed.0.weight",
                         "normalize.mean"}
    with pytest.raises(AdapterError, match="no LoRA tensors"):
        adapter_state({"enc.w.weight": torch.zeros(1)}, AdapterConfig(rank=1))


# ---------------------------------------------------------------------------------------------------- plan


@pytest.fixture(scope="module")
def tiny_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_out(tmp_path_factory.mktemp("lora_out") / "out")


def test_plan_shows_the_adapters_and_what_trains(tiny_out: Path, tmp_path: Path) -> None:
    result = espzoo(["plan", str(tiny_out), "--lora", str(RANK), "--train-also", "ctc.ctc_lo", "--json"], OFFLINE,
                    tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    adapters = json.loads(result.stdout)["adapters"]
    tensors = adapters["adapter_tensors"]
    assert "encoder.encoders.0.self_attn.linear_q.lora_A" in tensors
    assert tensors["encoder.encoders.0.self_attn.linear_q.lora_A"] == [RANK, 64]
    assert "decoder.decoders.0.src_attn.linear_v.lora_B" in tensors
    assert not any(k.startswith(("ctc.", "normalize.")) for k in tensors)
    assert adapters["train_also"] == ["ctc.ctc_lo.bias", "ctc.ctc_lo.weight"]
    new = sum(a * b for a, b in tensors.values())
    assert adapters["trainable"] == new + 31 * 64 + 31  # adapters + the CTC head
    assert adapters["trainable"] + adapters["frozen"] == adapters["total"]
    assert 0 < adapters["share"] < 0.1
    people = espzoo(["plan", str(tiny_out), "--lora", str(RANK)], OFFLINE, tmp_path)
    assert "LoRA adapters (new, trainable)" in people.stderr + people.stdout
    assert "trainable" in people.stderr and "frozen" in people.stderr


def test_a_wrong_target_pattern_is_one_sentence(tiny_out: Path, tmp_path: Path) -> None:
    result = espzoo(["plan", str(tiny_out), "--lora", "4", "--lora-targets", "encoder.encoders.0.self_attn.linear_qq"],
                    OFFLINE, tmp_path)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "linear_qq" in lines[0] and "closest: encoder.encoders.0.self_attn.linear_q" in lines[0]
    bad = espzoo(["plan", str(tiny_out), "--lora-alpha", "8"], OFFLINE, tmp_path)
    assert bad.returncode != 0 and "need --lora RANK" in bad.stderr


# ---------------------------------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def served(mirror_root: Path):
    server = MirrorServer(mirror_root)
    yield server.start()
    server.stop()


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("lora_es")
    return {"train": subset(SPEECH / "train", root / "train", 24), "dev": subset(SPEECH / "dev", root / "dev", 6),
            "test": subset(SPEECH / "test", root / "test", 3)}


@pytest.fixture(scope="module")
def finetuned(served: str, data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One LoRA fine-tune of 1 epoch, resumed to 2 (the slow part, shared by the tests below)."""
    work = tmp_path_factory.mktemp("lora_ft")
    hf_home, out = work / "hf", work / "exp"
    base = ["finetune", REPO, "--train", str(data["train"]), "--valid", str(data["dev"]), "--out", str(out),
            "--lora", str(RANK), "--lora-alpha", str(ALPHA), "--train-also", "ctc.ctc_lo", "--lr", "0.005",
            "--batch-bins", "200000", "--json"]
    first = espzoo([*base, "--max-epoch", "1"], served, hf_home)
    assert first.returncode == 0, first.stderr[-3000:]
    second = espzoo([*base, "--max-epoch", "2", "--resume"], served, hf_home)
    assert second.returncode == 0, second.stderr[-3000:]
    return {"out": out, "hf_home": hf_home, "first": json.loads(first.stdout), "second": json.loads(second.stdout),
            "url": served}


def test_resume_with_lora_continues_and_the_optimizer_holds_only_what_trains(finetuned: dict) -> None:
    out = finetuned["out"]
    assert finetuned["first"]["epochs"] == 1 and finetuned["second"]["epochs"] == 2
    assert "resuming" in (out / "train.log").read_text()
    # ESPnet's own resume file, written by this test's run (its reporter state is pickled Python objects)
    checkpoint = torch.load(out / "espnet" / "checkpoint.pth", map_location="cpu", weights_only=False)
    model = checkpoint["model"]
    trainable = [k for k in model if k.endswith((".lora_A", ".lora_B")) or k.startswith("ctc.ctc_lo.")]
    optimizer = checkpoint["optimizers"][0]
    assert len(optimizer["param_groups"][0]["params"]) == len(trainable)  # frozen tensors are not in it at all
    assert len(optimizer["state"]) == len(trainable)
    config = yaml.safe_load((out / "adapter_config.yaml").read_text())
    assert config["rank"] == RANK and config["alpha"] == ALPHA and config["base_repo"] == REPO
    assert len(config["base_commit"]) == 40


def test_lora_changes_the_model_and_only_what_trains(finetuned: dict) -> None:
    """Not the base model again (espnet#6092): the adapters moved; and nothing frozen moved."""
    out = finetuned["out"]
    trained, init = load(out / "model.pth"), load(out / "init" / "init.pth")
    adapters = {k for k in trained if k.endswith((".lora_A", ".lora_B"))}
    assert set(trained) - set(init) == adapters and set(init) <= set(trained)
    assert max(trained[k].abs().max().item() for k in adapters if k.endswith("lora_B")) > 1e-3  # B starts at 0
    changed = {k for k in init if not torch.equal(trained[k], init[k])}
    assert changed == {"ctc.ctc_lo.weight", "ctc.ctc_lo.bias"}  # --train-also; batch-norm stats too stay put


@pytest.fixture(scope="module")
def merged(finetuned: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("lora_merged") / "me" / "tiny-merged"
    result = espzoo(["export", str(finetuned["out"]), "--out", str(dest)], OFFLINE, finetuned["hf_home"])
    assert result.returncode == 0, result.stderr[-2000:]
    return dest


def test_merged_export_is_the_base_plus_the_folded_delta(finetuned: dict, merged: Path) -> None:
    meta = yaml.safe_load((merged / "meta.yaml").read_text())
    exported = load(merged / meta["files"]["asr_model_file"])
    trained, init = load(finetuned["out"] / "model.pth"), load(finetuned["out"] / "init" / "init.pth")
    assert set(exported) == set(init)  # a plain ESPnet model: no lora_* tensors
    scaling = ALPHA / RANK
    targets = {k[: -len(".lora_A")] for k in trained if k.endswith(".lora_A")}
    for key in exported:
        module = key.rsplit(".", 1)[0]
        if key.endswith(".weight") and module in targets:
            delta = trained[f"{module}.lora_B"] @ trained[f"{module}.lora_A"] * scaling
            assert torch.allclose(exported[key], init[key] + delta, atol=1e-6), key
            assert not torch.equal(exported[key], init[key]), key
        else:
            assert torch.equal(exported[key], trained[key]), key


def test_merged_and_adapter_decode_the_same(finetuned: dict, merged: Path, data: dict[str, Path], monkeypatch,
                                            capsys) -> None:
    from espzoo._espnet import import_asr_task
    from espzoo.evaluate import DecodeOptions, load_audio, load_recognizer, transcribe

    import_asr_task()  # ESPnet's import chain, offline (g2p_en's NLTK check satisfied)
    from espnet2.bin.asr_inference import Speech2Text

    audio = audio_files(data["test"])
    options = DecodeOptions(beam_size=2)
    with_adapter = transcribe(finetuned["out"], audio, options=options)
    meta = yaml.safe_load((merged / "meta.yaml").read_text())
    monkeypatch.chdir(merged)  # ESPnet alone, no espzoo or adapter code: the files as the card says
    plain = Speech2Text(asr_train_config=meta["yaml_files"]["asr_train_config"],
                        asr_model_file=meta["files"]["asr_model_file"], beam_size=2, ctc_weight=0.3, nbest=1)
    assert [plain(load_audio(a, 16000))[0][0] for a in audio] == with_adapter

    # CTC logits: the unmerged adapter model against the merged plain model, and against the base.
    recognizer = load_recognizer(finetuned["out"], options)
    adapted = recognizer.speech2text.asr_model
    for layer in adapted.modules():
        if hasattr(layer, "unmerge"):
            layer.unmerge()
    base = load_recognizer(merged, options).speech2text.asr_model  # rebuilt below with the init weights
    base.load_state_dict(load(finetuned["out"] / "init" / "init.pth"))
    wave = torch.tensor(load_audio(audio[0], 16000)).unsqueeze(0)
    lengths = torch.tensor([wave.shape[1]])

    def logits(model: torch.nn.Module) -> torch.Tensor:
        with torch.inference_mode():
            encoded, encoded_lengths = model.encode(wave, lengths)
            return model.ctc.log_softmax(encoded)

    difference = (logits(adapted) - logits(plain.asr_model)).abs().max().item()
    from_base = (logits(adapted) - logits(base)).abs().max().item()
    with capsys.disabled():
        print(f"\nmax |logit difference| merged vs adapter: {difference:.2e}; adapter vs base: {from_base:.2e}")
    assert difference < 1e-4 and from_base > 1e-2


def test_adapter_only_export_pulls_its_base_and_scores_like_the_merged_one(
    finetuned: dict, merged: Path, mirror_root: Path, data: dict[str, Path], tmp_path: Path
) -> None:
    root = tmp_path / "root"
    shutil.copytree(mirror_root, root)  # the base, at the same commit (a folder's commit is its content hash)
    shutil.copytree(merged, root / "me" / "tiny-merged")
    only = root / "me" / "tiny-lora"
    result = espzoo(["export", str(finetuned["out"]), "--out", str(only), "--adapter-only"], OFFLINE, tmp_path / "x")
    assert result.returncode == 0, result.stderr[-2000:]
    config = yaml.safe_load((only / "adapter_config.yaml").read_text())
    assert {"rank", "alpha", "targets", "base_repo", "base_commit"} <= set(config)
    assert config["base_repo"] == REPO and (only / "README.md").is_file() and (only / "meta.yaml").is_file()
    assert not list(only.rglob("*.ave.pth"))
    adapter = load(only / "adapter.pth")
    assert set(adapter) == {k for k in load(finetuned["out"] / "model.pth")
                            if k.endswith((".lora_A", ".lora_B")) or k.startswith("ctc.ctc_lo.")}
    assert f"`{REPO}` at commit `{config['base_commit']}`" in (only / "README.md").read_text()

    server = MirrorServer(root)
    url = server.start()
    try:
        hf_home = tmp_path / "hf"
        reports = {}
        for name in ("me/tiny-lora", "me/tiny-merged"):
            run = espzoo(["evaluate", name, "--data", str(data["test"]), "--json", "--beam", "1"], url, hf_home)
            assert run.returncode == 0, run.stderr[-2000:]
            reports[name] = json.loads(run.stdout)
    finally:
        server.stop()
    assert reports["me/tiny-lora"]["wer"] == reports["me/tiny-merged"]["wer"]
    assert reports["me/tiny-lora"]["cer"] == reports["me/tiny-merged"]["cer"]
    assert reports["me/tiny-lora"]["utterances"] == 3


def test_adapter_only_export_of_a_full_fine_tune_is_refused(tiny_out: Path, tmp_path: Path) -> None:
    result = espzoo(["export", str(tiny_out), "--out", str(tmp_path / "x"), "--adapter-only"], OFFLINE, tmp_path)
    assert result.returncode != 0 and "--lora" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "x").exists()
