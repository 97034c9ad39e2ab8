"""One Hub, two ESPnet generations (issue 21): no pretrained tensor lost, every export loaded by both.

Every checkpoint on the Hub was saved by ESPnet <= 202511; ESPnet 202611 renamed tensors and renames the old names
inside `load_state_dict` only. These tests run on both stacks (CI: the full suite on the newest Python, and this file
on Python 3.11 with espnet 202511). The inputs are made by something other than the code that reads them: the
shipped demo model (trained by ESPnet 202511), checkpoints saved by older releases (tests/fixtures/vintage, built
by scripts/make_vintage_fixtures.py in old venvs), and a model fine-tuned here read by the other generation's
ESPnet (its Python: ESPZOO_OTHER_PYTHON, else a .venv* of this checkout with the other release).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
from _hubtools import ESPZOO, SPEECH, subset
from _paths import REPO_ROOT

from espzoo.models.compat import espnet_release

DEMO = REPO_ROOT / "zoo" / "assets" / "pretrained" / "espzoo-demo" / "tiny-en-char"
LOADER = Path(__file__).resolve().parent / "espnet_load.py"
RENAMES_ON_LOAD = espnet_release() >= 202611  # the installed ESPnet renames names older releases saved
WAVS = sorted((SPEECH / "test" / "audio").iterdir())[:3]


def _espzoo(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([ESPZOO, *args], capture_output=True, text=True, timeout=timeout)


def _plan(model: Path, *extra: str) -> dict:
    done = _espzoo("plan", str(model), "--vocab", "keep", "--json", *extra)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def _load_with_espnet(python: str, config: Path, model: Path, cwd: Path | None = None) -> dict:
    """ESPnet's own Speech2Text in `python`'s venv: what a strict load would refuse, and the transcripts."""
    command = [python, str(LOADER), "--config", str(config), "--model", str(model), *map(str, WAVS)]
    if cwd is not None:
        command[2:2] = ["--cwd", str(cwd)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@cache
def other_generation_python() -> str | None:
    """A Python whose ESPnet is the other generation (202511 here on 202611, and the other way round)."""
    candidates = [os.environ.get("ESPZOO_OTHER_PYTHON", "")]
    candidates += sorted(str(p) for p in REPO_ROOT.glob(".venv*/bin/python"))
    mine = espnet_release()
    for python in filter(None, candidates):
        try:
            done = subprocess.run(
                [python, "-c", "from importlib.metadata import version; print(version('espnet'))"],
                capture_output=True, text=True, timeout=60,
            )
        except OSError:
            continue
        if done.returncode == 0 and done.stdout.strip() and int(done.stdout.split(".")[0]) != mine:
            return python
    return None


def _other_python() -> str:
    python = other_generation_python()
    if python is None:
        if os.environ.get("ESPZOO_REQUIRE_OTHER_GENERATION"):  # CI: both stacks are installed, this must run
            pytest.fail("ESPZOO_REQUIRE_OTHER_GENERATION is set but no Python with the other ESPnet generation "
                        "was found (set ESPZOO_OTHER_PYTHON)")
        pytest.skip("no venv with the other ESPnet generation here (CI sets ESPZOO_OTHER_PYTHON)")
    return python


# ---------------------------------------------------------------------------------------- plans of old names


def test_the_demo_model_plans_every_tensor_and_leaves_nothing_unused() -> None:
    """The shipped demo model was saved by ESPnet 202511: on 202611 its conv subsampling projection has the old
    name, and must still load (it was left at random and the old tensors dropped before)."""
    plan = _plan(DEMO)
    actions = plan["summary"]["actions"]
    assert set(actions) == {"load"}, actions
    assert plan["summary"]["unused_source"] == {}
    legacy = {row["target_key"]: row for row in plan["rows"] if row.get("legacy_key")}
    if RENAMES_ON_LOAD:
        assert set(legacy) == {"encoder.embed.out.weight", "encoder.embed.out.bias"}
        row = legacy["encoder.embed.out.weight"]
        assert row["source_key"] == "encoder.embed.out.0.weight" and row["action"] == "load"
        assert "legacy name encoder.embed.out.0.weight" in row["note"]
        assert plan["summary"]["legacy_names"] == 2
    else:
        assert legacy == {} and plan["summary"]["legacy_names"] == 0


def test_the_plan_follows_the_models_own_loader_value_for_value() -> None:
    """loader_renames (no table of names) puts each tensor where ESPnet's own strict load_state_dict puts it."""
    import torch

    from espzoo.models.build import build_model, loader_renames
    from espzoo.models.bundle import open_bundle
    from espzoo.transfer.sources import load_checkpoint

    bundle = open_bundle(DEMO)
    state = dict(load_checkpoint(Path(bundle.checkpoint)))
    model = build_model(bundle.resolved_config(), device="cpu")
    renames = loader_renames(model, {k: tuple(v.shape) for k, v in state.items()})
    assert bool(renames) == RENAMES_ON_LOAD
    model.load_state_dict(state, strict=True)  # ESPnet's loader: renames inside, refuses any leftover
    loaded = model.state_dict()
    for source, target in renames.items():
        assert torch.equal(loaded[target], state[source]), (source, target)
    assert set(state) - set(renames) <= set(loaded)


# ------------------------------------------------------------------------------------- nothing left over


@pytest.fixture(scope="module")
def demo_with_extra_layer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo model's hub folder whose checkpoint holds one more decoder block than its config builds (a
    checkpoint and a config that disagree, as a hand-edited repo or a wrong --conf leaves them)."""
    import torch

    root = tmp_path_factory.mktemp("extra") / "tiny-en-char"
    shutil.copytree(DEMO, root)
    checkpoint = next(root.glob("exp/*/*.pth"))
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    extra = {k.replace("decoder.decoders.0.", "decoder.decoders.5."): v.clone()
             for k, v in state.items() if k.startswith("decoder.decoders.0.")}
    torch.save({**state, **extra}, checkpoint)
    return root


def test_unused_tensors_are_named_and_finetune_refuses_them(demo_with_extra_layer: Path, tmp_path: Path) -> None:
    plan = _plan(demo_with_extra_layer)
    unused = plan["summary"]["unused_source"]["0"]
    assert unused and all(key.startswith("decoder.decoders.5.") for key in unused)
    shown = _espzoo("plan", str(demo_with_extra_layer), "--vocab", "keep")
    assert "decoder.decoders.5.self_attn.linear_q.weight" in shown.stderr + shown.stdout  # by name, not a count

    train = subset(SPEECH / "train", tmp_path / "train", 4)
    common = ["--train", str(train), "--valid", str(SPEECH / "dev"), "--vocab", "keep", "--dry-run"]
    refused = _espzoo("finetune", str(demo_with_extra_layer), "--out", str(tmp_path / "refused"), *common)
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "--exclude decoder.decoders.5" in errors[0] and "--allow-unused" in errors[0], errors
    assert not (tmp_path / "refused" / "init").exists()

    excluded = _espzoo("finetune", str(demo_with_extra_layer), "--out", str(tmp_path / "excluded"), *common,
                       "--exclude", "decoder.decoders.5")
    assert excluded.returncode == 0, excluded.stderr[-2000:]
    allowed = _espzoo("finetune", str(demo_with_extra_layer), "--out", str(tmp_path / "allowed"), *common,
                      "--allow-unused")
    assert allowed.returncode == 0, allowed.stderr[-2000:]
    assert (tmp_path / "allowed" / "init" / "init.pth").is_file()


# --------------------------------------------------------------------------- what espzoo writes, both read


@pytest.fixture(scope="module")
def finetuned_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo model fine-tuned for one epoch on the shipped Spanish speech, on this stack."""
    root = tmp_path_factory.mktemp("generations")
    out = root / "out"
    train = subset(SPEECH / "train", root / "train", 16)
    done = _espzoo("finetune", str(DEMO), "--train", str(train), "--valid", str(SPEECH / "dev"), "--out", str(out),
                   "--vocab", "keep", "--max-epoch", "1")
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def test_a_finetuned_model_keeps_the_pretrained_names(finetuned_demo: Path) -> None:
    import torch

    from espzoo.models.bundle import open_bundle

    pretrained = torch.load(open_bundle(DEMO).checkpoint, map_location="cpu", weights_only=True)
    for name in ("model.pth", *(p.name for p in (finetuned_demo / "espnet").glob("*epoch.pth"))):
        folder = finetuned_demo if name == "model.pth" else finetuned_demo / "espnet"
        state = torch.load(folder / name, map_location="cpu", weights_only=True)
        assert list(state) == list(pretrained), name  # the same names, in the same order
    names = finetuned_demo / "init" / "saved_names.json"
    assert names.is_file() == RENAMES_ON_LOAD


def test_this_generations_espnet_loads_the_finetuned_model_strictly(finetuned_demo: Path) -> None:
    loaded = _load_with_espnet(sys.executable, finetuned_demo / "config.yaml", finetuned_demo / "model.pth",
                               cwd=finetuned_demo)
    assert loaded["missing"] == [] and loaded["unexpected"] == [], loaded
    assert all(isinstance(text, str) for text in loaded["texts"])


def test_the_other_generations_espnet_loads_the_out_and_the_export_strictly(finetuned_demo: Path,
                                                                             tmp_path: Path) -> None:
    """An OUT and an export made on this stack, read by ESPnet's own Speech2Text of the other generation: every
    tensor lands (a strict load would accept it) and it decodes the same text as this generation does."""
    other = _other_python()
    here = _load_with_espnet(sys.executable, finetuned_demo / "config.yaml", finetuned_demo / "model.pth",
                             cwd=finetuned_demo)
    there = _load_with_espnet(other, finetuned_demo / "config.yaml", finetuned_demo / "model.pth",
                              cwd=finetuned_demo)
    assert there["espnet"] != here["espnet"]
    assert there["missing"] == [] and there["unexpected"] == [], there
    assert there["texts"] == here["texts"]

    exported = tmp_path / "export"
    done = _espzoo("export", str(finetuned_demo), "--out", str(exported))
    assert done.returncode == 0, done.stderr[-2000:]
    config = next(exported.glob("exp/*/config.yaml"))
    model = next(exported.glob("exp/*/*.pth"))
    for python in (sys.executable, other):
        loaded = _load_with_espnet(python, config.relative_to(exported), model.relative_to(exported), cwd=exported)
        assert loaded["missing"] == [] and loaded["unexpected"] == [], loaded
        assert loaded["texts"] == here["texts"]
    card = (exported / "README.md").read_text(encoding="utf-8")
    assert "### ESPnet releases" in card and "202511" in card


# ----------------------------------------------------------------------- checkpoints of older ESPnet releases

VINTAGE = Path(__file__).resolve().parent / "fixtures" / "vintage"
VINTAGE_REPOS = sorted(p.name for p in VINTAGE.iterdir() if (p / "meta.yaml").is_file()) if VINTAGE.is_dir() else []


def _saved_unused(name: str) -> tuple[str, ...]:
    """Modules an old release saved that the model does not have: ESPnet 0.9.x kept an unused RNN decoder in
    CTC-only (ctc_weight 1.0) checkpoints."""
    return ("decoder",) if name.startswith("0.") and name.endswith("-ctc") else ()


def test_the_vintage_set_covers_the_families_and_releases() -> None:
    releases = {name.split("-")[0] for name in VINTAGE_REPOS}
    families = {name.split("-", 1)[1] for name in VINTAGE_REPOS}
    assert {"0.9.7", "202204", "202402"} <= releases
    assert {"conformer", "transformer", "e_branchformer", "rnn", "ctc"} <= families
    for name in VINTAGE_REPOS:
        size = sum(p.stat().st_size for p in (VINTAGE / name).rglob("*") if p.is_file())
        assert size < 1 << 20, (name, size)


@pytest.mark.slow
@pytest.mark.parametrize("name", VINTAGE_REPOS)
def test_a_checkpoint_an_older_espnet_saved_loads_whole_finetunes_and_decodes(name: str, tmp_path: Path) -> None:
    """Saved by ESPnet 0.9.7, 202204 or 202402 (each in its own old venv): every tensor of the new model loads from
    it, nothing is left unused (but what that release saved and the model has not: listed, and excluded on
    purpose), one epoch trains on it, the result decodes and keeps the checkpoint's tensor names."""
    import torch

    from espzoo.models.bundle import open_bundle

    repo = VINTAGE / name
    excluded = _saved_unused(name)
    plan = _plan(repo)
    assert set(plan["summary"]["actions"]) == {"load"}, plan["summary"]["actions"]
    unused = plan["summary"]["unused_source"].get("0", [])
    assert all(any(k == m or k.startswith(m + ".") for m in excluded) for k in unused), unused
    assert bool(unused) == bool(excluded)  # 0.9.x: the 14 tensors of its unused decoder, by name
    options = [arg for module in excluded for arg in ("--exclude", module)]
    if excluded:
        assert _plan(repo, *options)["summary"]["unused_source"] == {}

    out = tmp_path / "out"
    train = subset(SPEECH / "train", tmp_path / "train", 4)
    valid = subset(SPEECH / "dev", tmp_path / "valid", 2)
    done = _espzoo("finetune", str(repo), "--train", str(train), "--valid", str(valid), "--out", str(out),
                   "--vocab", "keep", "--max-epoch", "1", *options)
    assert done.returncode == 0, done.stderr[-3000:]
    heard = _espzoo("transcribe", str(out), str(WAVS[0]))
    assert heard.returncode == 0, heard.stderr[-2000:]
    assert heard.stdout.startswith(str(WAVS[0])) and "\t" in heard.stdout

    pretrained = torch.load(open_bundle(repo).checkpoint, map_location="cpu", weights_only=True)
    kept = [k for k in pretrained if not any(k == m or k.startswith(m + ".") for m in excluded)]
    assert list(torch.load(out / "model.pth", map_location="cpu", weights_only=True)) == kept


def test_a_tensor_the_models_loader_discards_is_not_unused() -> None:
    """ESPnet's positional encoding drops the `pe` buffer releases before 0.5.3 saved (a load_state_dict pre-hook,
    in both generations): the plan follows it instead of calling it a lost pretrained tensor."""
    import torch

    from espzoo.models.build import loader_renames
    from espzoo.models.espnet_env import import_asr_task

    import_asr_task()
    if RENAMES_ON_LOAD:
        from espnet2.legacy.nets.pytorch_backend.transformer.embedding import PositionalEncoding
    else:
        from espnet.nets.pytorch_backend.transformer.embedding import PositionalEncoding
    model = torch.nn.ModuleDict({"pos": PositionalEncoding(8, 0.0), "out": torch.nn.Linear(8, 2)})
    shapes = {"pos.pe": (1, 50, 8), "out.weight": (2, 8), "out.bias": (2,)}
    assert loader_renames(model, shapes) == {"pos.pe": None}
