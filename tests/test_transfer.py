"""espzoo.transfer: ESPnet's init_param semantics (differential against ESPnet's own loader), its traps fixed,
the plan, the vocabulary transplant (functional check on CTC and decoder logits), apply, and `espzoo plan`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from _models import ARCHITECTURES, VOCAB_AXES, config_for, espnet_model, make_experiment
from _paths import SPEECH_ROOT
from typer.testing import CliRunner

from espzoo.errors import TransferError
from espzoo.transfer.apply import apply_plan
from espzoo.transfer.plan import ACTIONS, TransferOptions, make_plan, plan_transfer
from espzoo.transfer.spec import TransferSpec, parse_spec
from espzoo.transfer.vocab import read_texts

SPEECH = SPEECH_ROOT
ES_TEXT = SPEECH / "es" / "train" / "text"


def espnet_load(specs: list[str], config: dict, seed: int, ignore: bool = False) -> dict[str, torch.Tensor]:
    """ESPnet's way: build the model, then load_pretrained_model for each spec in order."""
    from espnet2.torch_utils.load_pretrained_model import load_pretrained_model

    model = espnet_model(config, seed)
    for spec in specs:
        load_pretrained_model(spec, model, ignore_init_mismatch=ignore)
    return model.state_dict()


def espzoo_load(specs: list[str], config: dict, seed: int, dest: Path, **options) -> tuple:
    """espzoo's way: plan + apply, then the ESPnet-built target (another seed) loads init.pth with strict=True."""
    plan = make_plan([parse_spec(s) for s in specs], config, **options)
    result = apply_plan(plan, dest, seed=seed)
    model = espnet_model(config, seed + 1000)
    model.load_state_dict(torch.load(result.checkpoint, weights_only=True), strict=True)
    return plan, model.state_dict()


def shared_rows(plan) -> dict[int, int]:
    """New index -> old index of the tokens both vocabularies share (composed new tokens map to tuples)."""
    return {new: old for new, old in plan.row_maps[0].items() if isinstance(old, int)}


def assert_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], skip: tuple[str, ...] = ()) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if k not in skip and not torch.equal(a[k], b[k])]
    assert different == []


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A conformer experiment dir (English chars), ESPnet-built, seed 1."""
    return make_experiment(tmp_path_factory.mktemp("pretrained"), "conformer", seed=1)


@pytest.fixture()
def target_config(pretrained: Path, tmp_path: Path) -> dict:
    return config_for("conformer", tmp_path)


# ---------------------------------------------------------------------------------------------------- spec grammar


def test_espnet_spec_strings_parse_as_espnet_means_them(pretrained: Path, tmp_path: Path) -> None:
    ckpt = str(pretrained / "model.pth")
    assert parse_spec(ckpt) == TransferSpec(ckpt)
    assert parse_spec(f"{ckpt}:decoder:decoder") == TransferSpec(ckpt, "decoder", "decoder")
    assert parse_spec(f"{ckpt}:decoder:decoder:decoder.embed") == TransferSpec(
        ckpt, "decoder", "decoder", ("decoder.embed",)
    )
    assert parse_spec(f"{ckpt}::decoder") == TransferSpec(ckpt, None, "decoder")
    assert parse_spec(f"{ckpt}:::decoder,ctc") == TransferSpec(ckpt, excludes=("decoder", "ctc"))
    # Trap: ESPnet reads `m.pth:::` as "exclude everything"; an empty exclude excludes nothing here.
    assert parse_spec(f"{ckpt}:::") == TransferSpec(ckpt) == parse_spec(f"{ckpt}:::,")
    repo = "espnet/some_model@v1.0"
    assert parse_spec(f"{repo}:encoder:encoder") == TransferSpec(repo, "encoder", "encoder")


def test_paths_holding_colons_work(pretrained: Path, tmp_path: Path) -> None:
    odd = tmp_path / "run:2024-01-01T10:00" / "model.pth"
    odd.parent.mkdir()
    odd.write_bytes((pretrained / "model.pth").read_bytes())
    assert parse_spec(f"{odd}:encoder:encoder:encoder.embed") == TransferSpec(
        str(odd), "encoder", "encoder", ("encoder.embed",)
    )
    assert parse_spec(str(odd)).source == str(odd)


def test_bad_spec_strings_say_what_is_wrong(tmp_path: Path, pretrained: Path) -> None:
    with pytest.raises(TransferError, match="neither an existing checkpoint or folder nor a repo id"):
        parse_spec(str(tmp_path / "missing.pth") + ":encoder")
    with pytest.raises(TransferError, match="neither an existing checkpoint"):
        parse_spec("exp/missing.pth:encoder")  # shaped like org/name, but a file name: not sent to the Hub
    with pytest.raises(TransferError, match="SOURCE:SRC:DST:EXCLUDES"):
        parse_spec(f"{pretrained / 'model.pth'}:a:b:c:d")


# ---------------------------------------------------------------------------------------------------- vs ESPnet


@pytest.mark.parametrize(
    "suffix",
    ["", ":::decoder", ":encoder:encoder", ":decoder:decoder:decoder.embed", ":::normalize,frontend", "::"],
)
def test_same_tensors_and_bits_as_espnets_loader(suffix: str, pretrained: Path, target_config: dict, tmp_path: Path):
    spec = f"{pretrained / 'model.pth'}{suffix}"
    expected = espnet_load([spec], target_config, seed=2)
    plan, got = espzoo_load([spec], target_config, seed=2, dest=tmp_path / "out")
    assert_identical(got, expected)
    source = torch.load(pretrained / "model.pth", weights_only=True)
    fresh = espnet_model(target_config, seed=2).state_dict()
    # What ESPnet loaded, exactly (tensors whose init equals the source's, e.g. LayerNorm ones, tell nothing).
    telling = {k for k in source if not torch.equal(fresh[k], source[k])}
    loaded = {r.target_key for r in plan.rows if r.action == "load"}
    assert loaded & telling == {k for k in telling if torch.equal(expected[k], source[k])}
    if suffix == ":::decoder":
        assert {r.action for r in plan.rows if r.module == "decoder"} == {"exclude"}


def test_renamed_keys_as_espnets_dst(pretrained: Path, target_config: dict, tmp_path: Path) -> None:
    """ESPnet's `decoder.pth::decoder`: a module's own state dict loaded under DST."""
    source = torch.load(pretrained / "model.pth", weights_only=True)
    (tmp_path / "enc").mkdir()
    encoder_only = tmp_path / "enc" / "encoder.pth"
    torch.save({k[len("encoder.") :]: v for k, v in source.items() if k.startswith("encoder.")}, encoder_only)
    spec = f"{encoder_only}::encoder"
    expected = espnet_load([spec], target_config, seed=2)
    plan, got = espzoo_load([spec], target_config, seed=2, dest=tmp_path / "out")
    assert_identical(got, expected)
    row = plan.by_key()["encoder.encoders.0.self_attn.linear_q.weight"]
    assert (row.action, row.source_key) == ("rename", "encoders.0.self_attn.linear_q.weight")
    assert {r.action for r in plan.rows if r.module == "encoder"} == {"rename"}


def test_several_specs_later_wins_as_espnet_applies_them(pretrained: Path, target_config: dict, tmp_path: Path):
    other = make_experiment(tmp_path / "other", "conformer", seed=7)
    first, second = pretrained / "model.pth", other / "model.pth"
    specs = [f"{first}", f"{second}:encoder:encoder", f"{second}:::decoder"]
    expected = espnet_load(specs, target_config, seed=2)
    plan, got = espzoo_load(specs, target_config, seed=2, dest=tmp_path / "out")
    assert_identical(got, expected)
    rows = plan.by_key()
    # The encoder comes from spec 2, which replaced spec 1's; spec 3 loads everything but the decoder.
    assert rows["encoder.embed.conv.0.weight"].spec == 2 and rows["encoder.embed.conv.0.weight"].overrides == [0, 1]
    # Spec 3 excludes the decoder: what spec 1 loaded stays (an exclude never unloads).
    assert rows["decoder.embed.0.weight"].spec == 0 and rows["decoder.embed.0.weight"].action == "load"
    as_json = {r["target_key"]: r for r in plan.to_json()["rows"]}
    assert as_json["encoder.embed.conv.0.weight"]["overrides"] == [0, 1] and as_json["ctc.ctc_lo.bias"]["spec"] == 2
    assert "overrides" not in as_json["decoder.embed.0.weight"]


def test_shape_mismatch_refused_unless_ignored_then_as_espnet(pretrained: Path, tmp_path: Path) -> None:
    target = config_for("conformer", tmp_path, encoder_conf={"linear_units": 48})
    spec = str(pretrained / "model.pth")
    with pytest.raises(TransferError, match=r"differ in shape .*--ignore-init-mismatch"):
        make_plan([parse_spec(spec)], target)
    expected = espnet_load([spec], target, seed=3, ignore=True)
    plan, got = espzoo_load([spec], target, seed=3, dest=tmp_path / "out", ignore_init_mismatch=True)
    assert_identical(got, expected)
    mismatched = [r for r in plan.rows if r.action == "mismatch"]
    assert mismatched and all("feed_forward" in r.target_key for r in mismatched)
    assert mismatched[0].source_shape != mismatched[0].target_shape


# ---------------------------------------------------------------------------------------------------- traps


def test_exclude_matches_at_module_boundaries(tmp_path: Path) -> None:
    """ESPnet's `startswith`: excluding encoder.encoders.1 also drops encoder.encoders.10; here it does not."""
    deep = make_experiment(tmp_path / "deep", "transformer", seed=1, encoder_conf={"num_blocks": 11, "output_size": 8,
                                                                                    "linear_units": 8})
    config = config_for("transformer", tmp_path / "t", encoder_conf={"num_blocks": 11, "output_size": 8,
                                                                     "linear_units": 8})
    spec = f"{deep / 'model.pth'}:::encoder.encoders.1"
    source = torch.load(deep / "model.pth", weights_only=True)
    key10 = "encoder.encoders.10.self_attn.linear_q.weight"
    espnet = espnet_load([spec], config, seed=2)
    assert not torch.equal(espnet[key10], source[key10])  # the trap: ESPnet silently dropped block 10
    plan, got = espzoo_load([spec], config, seed=2, dest=tmp_path / "out")
    assert torch.equal(got[key10], source[key10])
    rows = plan.by_key()
    assert rows["encoder.encoders.1.self_attn.linear_q.weight"].action == "exclude"
    assert rows[key10].action == "load"
    # --freeze has ESPnet's --freeze_param semantics, which already stop at the boundary.
    frozen = make_plan([parse_spec(str(deep / "model.pth"))], config, freeze=["encoder.encoders.1"])
    assert {r.target_key.split(".")[2] for r in frozen.rows if r.frozen} == {"1"}


def test_empty_exclude_excludes_nothing(pretrained: Path, target_config: dict, tmp_path: Path) -> None:
    spec = f"{pretrained / 'model.pth'}:::"
    untouched = espnet_model(target_config, seed=2).state_dict()
    assert_identical(espnet_load([spec], target_config, seed=2), untouched)  # the trap: ESPnet loaded nothing
    plan, got = espzoo_load([spec], target_config, seed=2, dest=tmp_path / "out")
    assert {r.action for r in plan.rows} == {"load"}
    assert_identical(got, torch.load(pretrained / "model.pth", weights_only=True))


@pytest.mark.parametrize(
    ("suffix", "freeze", "message"),
    [
        (":::decoders", (), r"exclude 'decoders' matches no tensor \(closest: decoder"),
        (":::decoder.embedd", (), r"exclude 'decoder.embedd' matches no tensor \(closest: decoder.embed"),
        (":encoderr:encoder", (), r"SRC 'encoderr' matches no tensor \(closest: encoder"),
        (":encoder:encodr", (), r"DST 'encodr' matches no tensor \(closest: encoder"),
        ("", ("encodr",), r"--freeze 'encodr' matches no tensor \(closest: encoder"),
    ],
)
def test_names_matching_nothing_are_errors_naming_the_closest(
    suffix: str, freeze: tuple, message: str, pretrained: Path, target_config: dict
) -> None:
    with pytest.raises(TransferError, match=message):
        make_plan([parse_spec(f"{pretrained / 'model.pth'}{suffix}")], target_config, freeze=freeze)


def test_untrusted_pickles_are_refused(tmp_path: Path, target_config: dict) -> None:
    from espzoo.errors import UnsafeCheckpointError

    class Payload:
        def __reduce__(self):
            return (print, ("pwned",))

    evil = tmp_path / "evil.pth"
    torch.save({"encoder.x": Payload()}, evil)
    with pytest.raises(UnsafeCheckpointError, match="could run code"):
        make_plan([parse_spec(str(evil))], target_config)


# ---------------------------------------------------------------------------------------------------- vocabulary


def _logits_match(pretrained_model, adapted_model, new_to_old: dict[int, int], decoder: bool) -> None:
    torch.manual_seed(0)
    speech, lengths = torch.randn(2, 9600), torch.tensor([9600, 8000])
    new_idx, old_idx = list(new_to_old), list(new_to_old.values())
    with torch.no_grad():
        enc_old, enc_lens = pretrained_model.encode(speech, lengths)
        enc_new, _ = adapted_model.encode(speech, lengths)
        assert torch.equal(enc_old, enc_new)
        ctc_old, ctc_new = pretrained_model.ctc.ctc_lo(enc_old), adapted_model.ctc.ctc_lo(enc_new)
        # The shared tokens' CTC logits are the pretrained model's, bit for bit.
        assert torch.equal(ctc_new[..., new_idx], ctc_old[..., old_idx])
        if decoder:
            ys_old = torch.tensor([old_idx[2:9], old_idx[5:12]])  # sequences of shared tokens
            ys_new = torch.tensor([new_idx[2:9], new_idx[5:12]])
            ys_lens = torch.tensor([7, 7])
            out_old, _ = pretrained_model.decoder(enc_old, enc_lens, ys_old, ys_lens)
            out_new, _ = adapted_model.decoder(enc_new, enc_lens, ys_new, ys_lens)
            assert torch.equal(out_new[..., new_idx], out_old[..., old_idx])


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_vocabulary_transplant_keeps_shared_token_logits(name: str, tmp_path: Path) -> None:
    exp = make_experiment(tmp_path / "pre", name, seed=1)
    plan = plan_transfer(str(exp), TransferOptions(vocab=f"char:{ES_TEXT}"))
    result = apply_plan(plan, tmp_path / "out")
    config = yaml.safe_load(result.config.read_text())
    assert config["token_list"][-1] == "<sos/eos>" and "á" in config["token_list"]
    assert config["init_param"] == [str(result.checkpoint.resolve())] and config["ignore_init_mismatch"] is False
    adapted = espnet_model(config, seed=99)  # ESPnet builds the new model from the adapted config
    adapted.load_state_dict(torch.load(result.checkpoint, weights_only=True), strict=True)
    source = espnet_model(yaml.safe_load((exp / "config.yaml").read_text()) | {"normalize_conf": {
        "stats_file": str(exp / "feats_stats.npz")}}, seed=5)
    source.load_state_dict(torch.load(exp / "model.pth", weights_only=True), strict=True)

    transplanted = {r.target_key for r in plan.rows if r.action == "transplant"}
    assert transplanted == {k for k in VOCAB_AXES if k in adapted.state_dict()}
    assert {r.action for r in plan.rows} == {"load", "transplant"}
    new_to_old = shared_rows(plan)
    big_blanks = 2 if name == "transducer" else 0  # <blank2>, <blank4>: ESPnet adds them to both models
    assert len(new_to_old) == plan.vocabulary.shared + big_blanks and 0 < plan.vocabulary.new_in_old < 1
    _logits_match(source, adapted, new_to_old, decoder=name != "transducer")
    if name == "transducer":  # the joint network's output rows and the prediction network's embedding too
        for key in ("joint_network.lin_out.weight", "decoder.embed.weight"):
            old, new = source.state_dict()[key], adapted.state_dict()[key]
            assert torch.equal(new[list(new_to_old)], old[list(new_to_old.values())])
        assert adapted.token_list[:3] == ["<blank4>", "<blank2>", "<blank>"]


def test_transplant_off_is_espnets_ignore_init_mismatch(pretrained: Path, tmp_path: Path) -> None:
    """transplant=False: the new vocabulary's head tensors are mismatches left at the new model's init, bit for
    bit what ESPnet's own --init_param with --ignore_init_mismatch gives (the other tensors load as usual)."""
    spec = str(pretrained / "model.pth")
    target = plan_transfer(str(pretrained), TransferOptions(vocab=f"char:{ES_TEXT}")).target_config
    with pytest.raises(TransferError, match=r"differ in shape .*--ignore-init-mismatch"):
        make_plan([parse_spec(spec)], target, transplant=False)
    plan, got = espzoo_load([spec], target, seed=4, dest=tmp_path / "out", transplant=False, ignore_init_mismatch=True)
    assert_identical(got, espnet_load([spec], target, seed=4, ignore=True))
    mismatched = {r.target_key for r in plan.rows if r.action == "mismatch"}
    assert mismatched == {k for k in VOCAB_AXES if k in got} and {r.action for r in plan.rows} == {"load", "mismatch"}
    assert plan.row_maps == {} and plan.summary()["transplant"] is False
    source = torch.load(spec, weights_only=True)
    assert not torch.equal(got["ctc.ctc_lo.weight"][:3], source["ctc.ctc_lo.weight"][:3])  # no pretrained rows kept


def test_new_rows_start_as_the_mean_or_random(pretrained: Path, tmp_path: Path) -> None:
    source = torch.load(pretrained / "model.pth", weights_only=True)["ctc.ctc_lo.weight"]
    got = {}
    for mode, seed in (("mean", 0), ("random", 0), ("random", 1)):
        plan = plan_transfer(str(pretrained), TransferOptions(vocab=f"char:{ES_TEXT}", new_rows=mode))
        out = apply_plan(plan, tmp_path / f"{mode}{seed}", seed=seed).checkpoint
        weight = torch.load(out, weights_only=True)["ctc.ctc_lo.weight"]
        fresh = [j for j in range(weight.shape[0]) if j not in plan.row_maps[0]]
        assert fresh  # á, é, ñ, ... are new
        got[(mode, seed)] = weight[fresh]
    assert torch.equal(got[("mean", 0)], source.mean(0, keepdim=True).expand_as(got[("mean", 0)]))
    assert not torch.equal(got[("random", 0)], got[("random", 1)])
    assert abs(got[("random", 0)].std().item() - source.std().item()) < 0.5 * source.std().item()
    assert plan.summary()["new_rows"] == "random"


def _rows(state: dict[str, torch.Tensor], key: str) -> torch.Tensor:
    return state[key].movedim(VOCAB_AXES[key], 0)


def test_new_tokens_compose_from_the_old_tokens_that_spell_them(pretrained: Path, tmp_path: Path) -> None:
    """English chars -> Spanish BPE: `▁la` starts as the mean of the rows of `<space>`, `l`, `a` (`ñ` of `n`), in
    every vocabulary-sized tensor, exactly; shared tokens keep their rows bit for bit; --new-rows mean gives every
    new token the mean of all rows instead; the plan says which token started how."""
    texts = read_texts(ES_TEXT)
    old = torch.load(pretrained / "model.pth", weights_only=True)
    old_index = {t: i for i, t in enumerate(yaml.safe_load((pretrained / "config.yaml").read_text())["token_list"])}
    states, plans = {}, {}
    for mode in ("compose", "mean"):
        plan = plan_transfer(str(pretrained), TransferOptions(vocab="bpe:40", new_rows=mode), texts=texts,
                             workdir=tmp_path / f"vocab_{mode}")
        plans[mode] = plan
        states[mode] = torch.load(apply_plan(plan, tmp_path / mode).checkpoint, weights_only=True)
    compose, mean = plans["compose"], plans["mean"]
    assert compose.vocabulary.tokens == mean.vocabulary.tokens and shared_rows(compose) == shared_rows(mean)
    new_tokens = {t["token"]: t for t in compose.new_tokens()}
    assert new_tokens["\u2581la"] == {"token": "\u2581la", "index": compose.vocabulary.tokens.index("\u2581la"),
                                      "init": "compose", "from": ["<space>", "l", "a"]}
    assert new_tokens["ñ"]["from"] == ["n"] and new_tokens["á"]["from"] == ["a"]
    counts = compose.summary()["new_tokens"]
    assert counts == {"compose": len(new_tokens)} and len(new_tokens) > 5
    assert mean.summary()["new_tokens"] == {"mean": len(new_tokens)}
    assert all(t["from"] == [] for t in mean.new_tokens())
    shared = shared_rows(compose)
    keys = [k for k in VOCAB_AXES if k in old]
    assert {r.target_key for r in compose.rows if r.action == "transplant"} == set(keys)
    for key in keys:
        before, composed, averaged = _rows(old, key), _rows(states["compose"], key), _rows(states["mean"], key)
        assert torch.equal(composed[list(shared)], before[list(shared.values())]), key
        assert torch.equal(averaged[list(shared)], before[list(shared.values())]), key
        for token in new_tokens.values():
            spelled = before[[old_index[t] for t in token["from"]]]
            assert torch.equal(composed[token["index"]], spelled.mean(dim=0)), (key, token)
            assert torch.equal(averaged[token["index"]], before.mean(dim=0)), (key, token)


def test_new_tokens_nothing_spells_keep_the_mean_row(pretrained: Path, tmp_path: Path) -> None:
    """A token whose text the old vocabulary cannot spell (a letter it never saw, base letter included) starts at
    the mean of all rows, and the plan says so."""
    vocab = tmp_path / "tokens.txt"
    vocab.write_text("\n".join(["<blank>", "<unk>", "a", "ж", "<space>", "<sos/eos>"]) + "\n", encoding="utf-8")
    plan = plan_transfer(str(pretrained), TransferOptions(vocab=str(vocab)))
    assert plan.new_tokens() == [{"token": "ж", "index": 3, "init": "mean", "from": []}]
    weight = torch.load(apply_plan(plan, tmp_path / "out").checkpoint, weights_only=True)["ctc.ctc_lo.weight"]
    source = torch.load(pretrained / "model.pth", weights_only=True)["ctc.ctc_lo.weight"]
    assert torch.equal(weight[3], source.mean(dim=0))


def test_bpe_vocabulary_bpemodel_travels_with_the_config(pretrained: Path, tmp_path: Path) -> None:
    plan = plan_transfer(str(pretrained), TransferOptions(vocab="bpe:40"), texts=read_texts(ES_TEXT),
                         workdir=tmp_path / "vocab")
    result = apply_plan(plan, tmp_path / "out")
    config = yaml.safe_load(result.config.read_text())
    assert config["token_type"] == "bpe" and Path(config["bpemodel"]) == (tmp_path / "out" / "bpe.model").resolve()
    assert Path(config["bpemodel"]).is_file() and result.tokens.read_text().split("\n")[0] == "<blank>"
    assert plan.vocabulary.text_coverage is not None and plan.row_maps[0]  # ▁ is the char model's <space>


# ---------------------------------------------------------------------------------------------------- stats, freeze


def test_stats_pretrained_by_default_new_on_request(pretrained: Path, tmp_path: Path) -> None:
    source = torch.load(pretrained / "model.pth", weights_only=True)
    kept = plan_transfer(str(pretrained))
    assert kept.by_key()["normalize.mean"].action == "load" and kept.summary()["stats"] == "pretrained"
    state = torch.load(apply_plan(kept, tmp_path / "kept").checkpoint, weights_only=True)
    assert torch.equal(state["normalize.mean"], source["normalize.mean"])
    new = plan_transfer(str(pretrained), TransferOptions(stats="new"))
    rows = [r for r in new.rows if r.target_key.startswith("normalize.")]
    assert {r.action for r in rows} == {"exclude"} and "--stats new" in rows[0].note
    assert new.summary()["stats"] == "new"


def test_freeze_marks_parameters_and_reaches_the_config(pretrained: Path, tmp_path: Path) -> None:
    plan = plan_transfer(str(pretrained), TransferOptions(freeze=("encoder", "frontend")))
    frozen = {r.target_key for r in plan.rows if r.frozen}
    assert frozen and all(k.startswith("encoder.") for k in frozen)  # frontend holds only a buffer (the mel matrix)
    assert not plan.by_key()["frontend.logmel.melmat"].frozen
    assert plan.to_json()["summary"]["frozen"]["tensors"] == len(frozen)
    config = yaml.safe_load(apply_plan(plan, tmp_path / "out").config.read_text())
    assert config["freeze_param"] == ["encoder", "frontend"]


def test_apply_leaves_nothing_half_written(pretrained: Path, tmp_path: Path) -> None:
    copy = make_experiment(tmp_path / "copy", "conformer", seed=1)
    plan = plan_transfer(str(copy))
    (copy / "model.pth").write_bytes(b"truncated")
    with pytest.raises(Exception, match="(?i)checkpoint"):
        apply_plan(plan, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == []


# ---------------------------------------------------------------------------------------------------- CLI


def _cli(*args: str):
    from espzoo.cli.main import app

    return CliRunner().invoke(app, ["plan", *args])


def test_plan_cli_json_schema(pretrained: Path) -> None:
    result = _cli(str(pretrained), "--vocab", f"char:{ES_TEXT}", "--exclude", "decoder", "--freeze", "encoder",
                  "--json")
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert set(plan) == {"rows", "summary", "new_tokens"}
    for row in plan["rows"]:
        assert {"target_key", "action", "source_key", "source_shape", "target_shape"} <= set(row)
        assert row["action"] in ACTIONS
        assert row.get("frozen", False) is (row["target_key"].startswith("encoder.") and row.get("frozen", False))
    actions = plan["summary"]["actions"]
    assert set(actions) == {"load", "transplant", "exclude"}
    assert actions["transplant"]["tensors"] == 2  # the CTC output; the decoder's are excluded
    assert sum(a["tensors"] for a in actions.values()) == len(plan["rows"])
    assert plan["summary"]["modules"]["decoder"] == {"exclude": plan["summary"]["modules"]["decoder"]["exclude"]}
    assert plan["summary"]["frozen"]["tensors"] > 0 and plan["summary"]["vocabulary"]["size"] == 33
    assert plan["summary"]["stats"] == "pretrained"


def test_plan_cli_no_transplant_is_espnets_way(pretrained: Path) -> None:
    refused = _cli(str(pretrained), "--vocab", f"char:{ES_TEXT}", "--no-transplant")
    assert refused.exit_code == 1 and "--ignore-init-mismatch" in refused.output
    result = _cli(str(pretrained), "--vocab", f"char:{ES_TEXT}", "--no-transplant", "--ignore-init-mismatch", "--json")
    assert result.exit_code == 0, result.output
    actions = {row["target_key"]: row["action"] for row in json.loads(result.stdout)["rows"]}
    assert actions["ctc.ctc_lo.weight"] == actions["decoder.embed.0.weight"] == "mismatch"
    assert "transplant" not in actions.values()


def test_plan_cli_table_collapsed_and_detailed(pretrained: Path) -> None:
    collapsed = _cli(str(pretrained), "--vocab", f"char:{ES_TEXT}")
    assert collapsed.exit_code == 0, collapsed.output
    words = " ".join(collapsed.output.split())  # the console wraps long lines
    assert "new tokens' rows: " in words and "of the old tokens that spell it (--json: each token)" in words
    assert "transplant" in collapsed.output and "encoder" in collapsed.output
    assert "encoder.encoders.0" not in collapsed.output
    assert "normalization stats: the pretrained model's" in collapsed.output
    detailed = _cli(str(pretrained), "--detail", "--stats", "new")
    assert detailed.exit_code == 0 and "normalize.mean" in detailed.output and "excluded" in detailed.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--exclude", "decoders"], "matches no tensor (closest: decoder"),
        (["--map", "encoder"], "is not SRC=DST"),
        (["--vocab", "bpe:many"], "must be a positive integer"),
        (["--new-rows", "zeros"], "is not one of compose, mean, random"),
        (["--init-param", "/nowhere/model.pth:encoder"], "neither an existing checkpoint"),
    ],
)
def test_plan_cli_bad_input_is_one_sentence(args: list[str], message: str, pretrained: Path) -> None:
    result = _cli(str(pretrained), *args)
    assert result.exit_code == 1
    assert message in result.output and "Traceback" not in result.output


def test_plan_for_a_hub_layout_folder_and_a_repo_id_from_the_mirror(
    tiny_repo_char: Path, mirror_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from espzoo.serve.server import MirrorServer

    local = plan_transfer(str(tiny_repo_char), TransferOptions(vocab=f"char:{ES_TEXT}", excludes=("decoder",)))
    assert {r.action for r in local.rows} == {"load", "transplant", "exclude"}
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    with MirrorServer(mirror_root) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        result = _cli("espzoo-test/tiny-char", "--vocab", f"char:{ES_TEXT}", "--exclude", "decoder", "--json")
    assert result.exit_code == 0, result.output
    remote = json.loads(result.stdout)
    spec = remote["summary"]["specs"][0]
    assert spec["repo_id"] == "espzoo-test/tiny-char" and len(spec["commit"]) == 40
    assert [r["action"] for r in remote["rows"]] == [r.action for r in local.rows]


def test_include_and_map_sugar(pretrained: Path, tmp_path: Path) -> None:
    included = plan_transfer(str(pretrained), TransferOptions(includes=("encoder",)))
    assert {r.action for r in included.rows if r.module == "encoder"} == {"load"}
    others = [r for r in included.rows if r.module != "encoder"]
    assert {r.action for r in others} == {"exclude"} and "not under --include encoder" in others[0].note
    mapped = plan_transfer(str(pretrained), TransferOptions(map=("encoder", "encoder")))
    assert {r.action for r in mapped.rows if r.module == "encoder"} == {"load"}
    assert {r.action for r in mapped.rows if r.module != "encoder"} == {"init"}
    # What --map leaves at init comes from ESPnet's fresh build of the new model; the checkpoint is complete.
    state = torch.load(apply_plan(mapped, tmp_path / "out").checkpoint, weights_only=True)
    assert state.keys() == torch.load(pretrained / "model.pth", weights_only=True).keys()


def test_stats_new_with_everything_else_loaded_needs_no_model_build(pretrained: Path, tmp_path: Path) -> None:
    plan = plan_transfer(str(pretrained), TransferOptions(stats="new"))
    state = torch.load(apply_plan(plan, tmp_path / "out").checkpoint, weights_only=True)
    source = torch.load(pretrained / "model.pth", weights_only=True)
    assert state.keys() == source.keys()
    assert torch.equal(state["encoder.embed.conv.0.weight"], source["encoder.embed.conv.0.weight"])


def _started_from(config: dict, init: Path) -> dict:
    """What ESPnet's model really holds after its strict load of the init checkpoint (shared tensors included)."""
    model = espnet_model(config, seed=123)
    model.load_state_dict(torch.load(init, weights_only=True), strict=True)
    return model.state_dict()


@pytest.mark.parametrize("excludes", [(), ("pit_ctc",)])
def test_pit_ctc_plan_is_what_the_model_starts_from(excludes: tuple, tmp_path: Path) -> None:
    """PIT-CTC's criterion holds the model's CTC layer: `--exclude pit_ctc` cannot give it fresh rows while CTC
    keeps the transplanted ones; the plan says so, and the model after ESPnet's load holds what the plan says."""
    exp = make_experiment(tmp_path / "pre", "", family="pit_ctc", seed=1)
    plan = plan_transfer(str(exp), TransferOptions(vocab=f"char:{ES_TEXT}", excludes=excludes))
    rows = plan.by_key()
    for key in ("ctc.ctc_lo.weight", "pit_ctc.criterion_fn.ctc_lo.weight"):
        assert rows[key].action == "transplant"
    assert "the same tensor as ctc.ctc_lo.weight" in rows["pit_ctc.criterion_fn.ctc_lo.weight"].note
    result = apply_plan(plan, tmp_path / "out")
    started = _started_from(yaml.safe_load(result.config.read_text()), result.checkpoint)
    pretrained = torch.load(exp / "model.pth", weights_only=True)
    new_to_old = shared_rows(plan)
    for key in ("ctc.ctc_lo.weight", "pit_ctc.criterion_fn.ctc_lo.weight"):
        assert torch.equal(started[key][list(new_to_old)], pretrained["ctc.ctc_lo.weight"][list(new_to_old.values())])
    init = torch.load(result.checkpoint, weights_only=True)
    assert all(torch.equal(started[row.target_key], init[row.target_key]) for row in plan.rows)


def test_mask_ctc_keeps_the_pretrained_mask_row(tmp_path: Path) -> None:
    exp = make_experiment(tmp_path / "pre", "", family="mask_ctc", seed=1)
    plan = plan_transfer(str(exp), TransferOptions(vocab=f"char:{ES_TEXT}"))
    result = apply_plan(plan, tmp_path / "out")
    config = yaml.safe_load(result.config.read_text())
    started = _started_from(config, result.checkpoint)
    pretrained = torch.load(exp / "model.pth", weights_only=True)
    for key in ("decoder.embed.0.weight", "decoder.output_layer.weight", "decoder.output_layer.bias"):
        assert plan.by_key()[key].action == "transplant"
        assert torch.equal(started[key][-1], pretrained[key][-1])  # <mask>: the last row in both models
    old_rows = pretrained["ctc.ctc_lo.weight"].shape[0]
    assert started["ctc.ctc_lo.weight"].shape[0] == len(config["token_list"]) != old_rows
    new_to_old = shared_rows(plan)
    shared = {n: o for n, o in new_to_old.items() if n < len(config["token_list"]) and o < old_rows}
    ctc_old, ctc_new = pretrained["ctc.ctc_lo.weight"], started["ctc.ctc_lo.weight"]
    assert torch.equal(ctc_new[list(shared)], ctc_old[list(shared.values())])
