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
from _hubtools import ESPZOO, SPEECH, client_env, subset
from _tiny_out import audio_files, build_tiny_out

from espzoo.errors import AdapterError
from espzoo.lora.config import AdapterConfig
from espzoo.lora.layer import LoRALinear, apply_adapters
from espzoo.lora.weights import merged_state
from espzoo.serve.server import MirrorServer

REPO = "espzoo-test/tiny-char"
RANK, ALPHA = 4, 8.0
# ESPnet averages the n best epochs (keep_nbest 5, capped at max_epoch); an averaged adapter is stored at rank n x r.
FIRST_AVERAGED = 2  # `finetuned`: 1 epoch, resumed to 2
AVERAGED = 3  # `continued` (from finetuned's adapter, stored at rank 2 x RANK): 2 epochs, resumed to 3
CONTINUED_RANK = FIRST_AVERAGED * RANK
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


def test_averaging_lora_checkpoints_averages_their_merged_models() -> None:
    """mean(B) @ mean(A) != mean(B @ A): ESPnet's per-tensor average would give a model none of the checkpoints
    agreed on. The average here is the mean of the merged models; frozen tensors stay bit for bit."""
    from espzoo.lora.weights import average_states

    torch.manual_seed(0)
    config = AdapterConfig(rank=2, alpha=6.0)
    frozen = torch.randn(5, 4)
    states = [{"m.weight": frozen.clone(), "m.lora_A": torch.randn(2, 4), "m.lora_B": torch.randn(5, 2),
               "ctc.weight": torch.randn(3, 4), "bn.num_batches_tracked": torch.tensor(7)} for _ in range(3)]
    averaged = average_states(states)
    merged = [merged_state(s, config) for s in states]
    expected = torch.stack([m["m.weight"] for m in merged]).mean(0)
    assert torch.allclose(merged_state(averaged, config)["m.weight"], expected, atol=1e-5)
    naive = {**averaged, "m.lora_A": torch.stack([s["m.lora_A"] for s in states]).mean(0),
             "m.lora_B": torch.stack([s["m.lora_B"] for s in states]).mean(0)}
    assert not torch.allclose(merged_state(naive, config)["m.weight"], expected, atol=1e-2)  # what ESPnet does
    assert averaged["m.lora_A"].shape == (6, 4) and averaged["m.lora_B"].shape == (5, 6)  # rank 3 x 2, exact
    assert torch.equal(averaged["m.weight"], frozen)  # (w + w + w) / 3 may round: equal ones are kept as they are
    assert torch.allclose(averaged["ctc.weight"], torch.stack([s["ctc.weight"] for s in states]).mean(0))
    assert averaged["bn.num_batches_tracked"].item() == 7

    # The averaged adapter loads into a model whose layers take the rank from the tensors, scaled as trained.
    model = torch.nn.Module()
    model.m = torch.nn.Linear(4, 5)
    from espzoo.lora.weights import stored_ranks

    apply_adapters(model, AdapterConfig(rank=2, alpha=6.0, targets=("m",)), stored_ranks(averaged))
    model.load_state_dict({k: v for k, v in averaged.items() if k.startswith("m.")}, strict=False)
    x = torch.randn(2, 4)
    assert torch.allclose(model.m(x), torch.nn.functional.linear(x, expected, model.m.bias), atol=1e-5)


def test_an_adapter_keeps_what_its_base_does_not_have(tmp_path: Path) -> None:
    """adapter.pth: the adapters, what trained fully, and whatever the plan did not load unchanged from the base
    (a new vocabulary's transplanted rows, new normalization stats), so that base + adapter is the model."""
    from espzoo.lora.weights import adapter_state, loaded_from_base

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
    from espzoo.decode.recognizer import DecodeOptions, load_recognizer
    from espzoo.decode.runner import load_audio, transcribe
    from espzoo.models.espnet_env import import_asr_task

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


def test_a_tampered_adapter_config_is_one_sentence(finetuned: dict, mirror_root: Path, data: dict[str, Path],
                                                   tmp_path: Path) -> None:
    """adapter_config.yaml edited by hand or by an attacker: a base_repo that is a path, a rank that is no number, a
    base_commit that is a branch (the adapter would no longer be pinned), or another base model whose layers do not
    fit the adapter: each is one sentence naming the file, never an internal error (issue 27: 10)."""
    root = tmp_path / "root"
    shutil.copytree(mirror_root, root)
    other = root / "me" / "other"  # another model: the base with one adapted layer of another shape
    shutil.copytree(root / REPO, other)
    (checkpoint,) = [p for p in other.rglob("*.pth")]
    state = load(checkpoint)
    layer = next(k[:-len(".lora_A")] for k in load(finetuned["out"] / "model.pth") if k.endswith(".lora_A"))
    state[f"{layer}.weight"] = state[f"{layer}.weight"][:, :16].clone()
    torch.save(state, checkpoint)
    only = tmp_path / "only"
    result = espzoo(["export", str(finetuned["out"]), "--out", str(only), "--adapter-only"], OFFLINE, tmp_path / "x")
    assert result.returncode == 0, result.stderr[-2000:]
    good = yaml.safe_load((only / "adapter_config.yaml").read_text())
    with MirrorServer(root) as server:
        other_commit = server.revision("me/other").commit
        cases = [("base_repo", "../..", "base_repo is '../..', not ORG/NAME"),
                 ("rank", "abc", "rank is 'abc', not a number"),
                 ("base_commit", "main", "base_commit is 'main', not the 40-character commit id"),
                 ("base", None, f"the base me/other@{other_commit} has {layer}.weight of shape")]
        for n, (key, value, said) in enumerate(cases):
            tampered = tmp_path / f"t{n}"
            shutil.copytree(only, tampered)
            config = {**good, "base_repo": "me/other", "base_commit": other_commit} if key == "base" else {
                **good, key: value}
            (tampered / "adapter_config.yaml").write_text(yaml.safe_dump(config))
            run = espzoo(["evaluate", str(tampered), "--data", str(data["test"]), "--json", "--beam", "1"],
                         server.url, tmp_path / "hf")
            lines = run.stderr.strip().splitlines()
            assert run.returncode not in (0, None) and "Traceback" not in run.stderr, run.stderr[-2000:]
            assert len(lines) == 1 and said in lines[0] and "internal error" not in lines[0], (key, run.stderr)


def test_adapter_only_export_of_a_full_fine_tune_is_refused(tiny_out: Path, tmp_path: Path) -> None:
    result = espzoo(["export", str(tiny_out), "--out", str(tmp_path / "x"), "--adapter-only"], OFFLINE, tmp_path)
    assert result.returncode != 0 and "--lora" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "x").exists()


# ---------------------------------------------------------------------------------------------------- continuing


@pytest.fixture(scope="module")
def continued(finetuned: dict, mirror_root: Path, data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory):
    """The adapter-only export of `finetuned`, served by the mirror beside its base, fine-tuned further from
    there with the real client: 2 epochs, then resumed to 3 (ESPnet averages the 3 best: keep_nbest 5, capped at
    the resumed run's max_epoch)."""
    work = tmp_path_factory.mktemp("lora_cont")
    root = work / "root"
    shutil.copytree(mirror_root, root)
    only = root / "me" / "tiny-lora"
    result = espzoo(["export", str(finetuned["out"]), "--out", str(only), "--adapter-only"], OFFLINE, work / "x")
    assert result.returncode == 0, result.stderr[-2000:]
    server = MirrorServer(root)
    url = server.start()
    hf_home, out = work / "hf", work / "exp"
    args = ["finetune", "me/tiny-lora", "--train", str(data["train"]), "--valid", str(data["dev"]), "--out", str(out),
            "--lr", "0.005", "--batch-bins", "200000", "--json"]
    try:
        first = espzoo([*args, "--max-epoch", "2"], url, hf_home)
        assert first.returncode == 0, first.stderr[-3000:]
        init = load(out / "init" / "init.pth")  # before the resume (which keeps it)
        second = espzoo([*args, "--max-epoch", "3", "--resume"], url, hf_home)
        assert second.returncode == 0, second.stderr[-3000:]
        yield {"out": out, "only": only, "url": url, "hf_home": hf_home, "init": init, "work": work,
               "first": json.loads(first.stdout), "second": json.loads(second.stdout)}
    finally:
        server.stop()


def test_finetune_continues_an_adapter_only_export_pulled_with_its_base(finetuned: dict, continued: dict) -> None:
    out, init = continued["out"], continued["init"]
    exported = load(continued["only"] / "adapter.pth")
    base = load(finetuned["out"] / "init" / "init.pth")  # the pinned base model's tensors
    lora = {k for k in exported if k.endswith((".lora_A", ".lora_B"))}
    assert lora and all(torch.equal(init[k], exported[k]) for k in lora)  # the adapter as trained, not B = 0
    assert all(torch.equal(init[k], exported[k]) for k in exported)  # and what it carried (the CTC head)
    assert all(torch.equal(init[k], base[k]) for k in base if k not in exported)  # on the base it names
    config = yaml.safe_load((out / "adapter_config.yaml").read_text())
    first = yaml.safe_load((finetuned["out"] / "adapter_config.yaml").read_text())
    assert (config["base_repo"], config["base_commit"]) == (REPO, first["base_commit"])
    # It trains the adapter as stored: finetuned's averaged one, rank 2 x RANK (alpha with it: the same scaling).
    assert (config["rank"], config["alpha"]) == (CONTINUED_RANK, FIRST_AVERAGED * ALPHA)
    assert "ctc.ctc_lo" in config["train_also"]
    assert set(config["carried"]) == {"ctc.ctc_lo.weight", "ctc.ctc_lo.bias"}
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["source"]["repo_id"] == "me/tiny-lora"
    trained = load(out / "espnet" / "1epoch.pth") if (out / "espnet" / "1epoch.pth").is_file() else load(
        out / "model.pth")
    assert any(not torch.equal(trained[k], init[k]) for k in lora)  # it trained on
    assert all(torch.equal(trained[k], init[k]) for k in init if k not in lora and not k.startswith("ctc."))


def test_a_continued_adapter_resumes(continued: dict) -> None:
    assert continued["first"]["epochs"] == 2 and continued["second"]["epochs"] == 3
    assert "resuming" in (continued["out"] / "train.log").read_text()


def test_the_n_best_average_is_the_mean_of_the_merged_epochs(continued: dict) -> None:
    """ESPnet's trainer averaged the 3 best epochs into model.pth through espzoo.lora.average_nbest_models: the
    merged model.pth is the mean of the merged epoch models (within fp tolerance), not mean(B) @ mean(A)."""
    out = continued["out"]
    config = AdapterConfig.read(out / "adapter_config.yaml")
    averaged = load(out / "model.pth")
    epochs = {p.name: load(p) for p in sorted((out / "espnet").glob("*epoch.pth"))}
    key = "encoder.encoders.0.self_attn.linear_q.lora_A"
    assert averaged[key].shape[0] == AVERAGED * CONTINUED_RANK
    # Which epochs went in: the stacked A's are theirs, exactly.
    used = [next(name for name, state in epochs.items() if torch.equal(state[key], chunk))
            for chunk in averaged[key].split(CONTINUED_RANK)]
    assert len(set(used)) == AVERAGED, used
    merged = merged_state(averaged, config)
    each = [merged_state(epochs[name], config) for name in used]
    for name, value in merged.items():
        if not value.is_floating_point():  # num_batches_tracked of the frozen batch norms: equal, kept
            assert all(torch.equal(value, m[name]) for m in each), name
            continue
        assert torch.allclose(value, sum(m[name] for m in each) / AVERAGED, atol=1e-6), name
    naive = {**averaged, **{k: sum(epochs[u][k] for u in used) / AVERAGED for k in averaged
                            if k.endswith((".lora_A", ".lora_B"))}}
    difference = max((merged_state(naive, config)[k] - merged[k]).abs().max().item() for k in merged)
    assert difference > 1e-7  # what ESPnet's own average would have given differs


def test_a_continued_adapter_exports_against_the_first_base_and_decodes_the_same(
    continued: dict, data: dict[str, Path]
) -> None:
    """Its adapter-only export names the original base and carries what the first adapter carried; decoded
    (base pulled through the mirror, averaged rank-24 adapters on a rank-4 config) it scores as the run does."""
    dest = continued["work"] / "again"
    url, hf_home = continued["url"], continued["hf_home"]
    result = espzoo(["export", str(continued["out"]), "--out", str(dest), "--adapter-only"], OFFLINE, hf_home)
    assert result.returncode == 0, result.stderr[-2000:]
    adapter = load(dest / "adapter.pth")
    assert {k for k in adapter if not k.endswith((".lora_A", ".lora_B"))} == {"ctc.ctc_lo.weight", "ctc.ctc_lo.bias"}
    config = yaml.safe_load((dest / "adapter_config.yaml").read_text())
    assert config["base_repo"] == REPO
    # The averaged adapter as stored: rank n x its rank, alpha scaled with it (alpha / rank, the model, unchanged).
    rank, alpha = AVERAGED * CONTINUED_RANK, AVERAGED * FIRST_AVERAGED * ALPHA
    assert (config["rank"], config["alpha"]) == (rank, alpha)
    assert f"rank {rank}, alpha {alpha:g}" in (dest / "README.md").read_text()
    reports = []
    for model in (continued["out"], dest):
        run = espzoo(["evaluate", str(model), "--data", str(data["test"]), "--json", "--beam", "1", "--rows"], url,
                     hf_home)
        assert run.returncode == 0, run.stderr[-2000:]
        reports.append(json.loads(run.stdout))
    assert [r["hypothesis"] for r in reports[0]["rows"]] == [r["hypothesis"] for r in reports[1]["rows"]]
    assert reports[0]["cer"] == reports[1]["cer"]


def test_changing_a_continued_adapter_is_one_sentence(continued: dict, data: dict[str, Path]) -> None:
    run = espzoo(["finetune", "me/tiny-lora", "--train", str(data["train"]), "--valid", str(data["dev"]),
                  "--out", str(continued["work"] / "no"), "--lora", "16", "--json"], continued["url"],
                 continued["hf_home"])
    assert run.returncode != 0 and "Traceback" not in run.stderr
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "drop --lora 16" in lines[0], run.stderr
    assert not (continued["work"] / "no" / "model.pth").exists()


# ---------------------------------------------------------------------------------------------------- S2T


@pytest.mark.slow
def test_s2t_lora_changes_the_model_exports_merged_and_decodes_the_same(tiny_s2t: Path, tmp_path: Path) -> None:
    """The tiny OWSM model from the mirror: a LoRA fine-tune of 2 epochs with --lang spa changes the model
    (adapters only); the merged export loads in ESPnet's own s2t_inference from its files alone and gives the
    transcripts espzoo gives decoding with the adapter, whose logits it matches."""
    from _hubtools import espnet_transcripts

    from espzoo.decode.recognizer import DecodeOptions, load_recognizer
    from espzoo.decode.runner import load_audio

    root = tmp_path / "root"
    shutil.copytree(tiny_s2t, root / "espzoo-test" / "tiny-owsm")
    data = {"train": subset(SPEECH / "train", tmp_path / "es" / "train", 24),
            "dev": subset(SPEECH / "dev", tmp_path / "es" / "dev", 6)}
    hf_home, out, export = tmp_path / "hf", tmp_path / "exp", tmp_path / "export"
    server = MirrorServer(root)
    url = server.start()
    try:
        ft = espzoo(["finetune", "espzoo-test/tiny-owsm", "--train", str(data["train"]), "--valid", str(data["dev"]),
                     "--out", str(out), "--lang", "spa", "--lora", str(RANK), "--lora-alpha", str(ALPHA),
                     "--lr", "0.005", "--max-epoch", "2", "--batch-bins", "400000", "--json"], url, hf_home, 900)
        assert ft.returncode == 0, ft.stderr[-3000:]
        assert json.loads(ft.stdout)["epochs"] == 2
        trained, init = load(out / "model.pth"), load(out / "init" / "init.pth")
        adapters = {k for k in trained if k.endswith((".lora_A", ".lora_B"))}
        assert any(k.startswith("decoder.") for k in adapters) and any(k.startswith("encoder.") for k in adapters)
        assert max(trained[k].abs().max().item() for k in adapters if k.endswith("lora_B")) > 1e-4
        assert all(torch.equal(trained[k], init[k]) for k in init)  # nothing else trained (same vocabulary)

        ex = espzoo(["export", str(out), "--out", str(export)], url, hf_home)
        assert ex.returncode == 0, ex.stderr[-3000:]
        exported = load(export / yaml.safe_load((export / "meta.yaml").read_text())["files"]["s2t_model_file"])
        assert set(exported) == set(init)  # a plain ESPnet S2T model

        audio = sorted((SPEECH / "test" / "audio").glob("*.flac"))[:3]
        ours = espzoo(["transcribe", str(out), *map(str, audio), "--lang", "spa", "--json"], url, hf_home)
        assert ours.returncode == 0, ours.stderr[-3000:]
        with_adapter = [r["text"] for r in json.loads(ours.stdout)]
        assert with_adapter == espnet_transcripts(export, "s2t", "<spa>", audio)
    finally:
        server.stop()

    options = DecodeOptions(lang="spa")
    adapted, merged, base = (load_recognizer(m, options) for m in (out, export, tiny_s2t))
    wave = torch.tensor(load_audio(audio[0], adapted.sample_rate)).unsqueeze(0)
    lengths = torch.tensor([wave.shape[1]])

    def logits(recognizer: object) -> torch.Tensor:
        model = recognizer.speech2text.model  # type: ignore[attr-defined]
        with torch.inference_mode():
            encoded, _ = model.encode(wave, lengths)
            return model.ctc.log_softmax(encoded)

    assert (logits(adapted) - logits(merged)).abs().max().item() < 1e-4
    assert (logits(adapted) - logits(base)).abs().max().item() > 1e-3  # not the base model again (espnet#6092)
