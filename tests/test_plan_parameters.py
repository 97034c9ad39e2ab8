"""The plan says how many parameters train, for every model (ASR, OWSM, OWSM-CTC): total, trainable, frozen and
their share, with --freeze and --lora taken into account; the oracle is the model ESPnet builds from the planned
config, frozen as ESPnet's trainer freezes (`--freeze_param`: every parameter under the module)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from _hubtools import ESPZOO, client_env

OFFLINE = "http://127.0.0.1:9"


def espnet_counts(config: dict, freeze: tuple[str, ...]) -> dict[str, int]:
    """What ESPnet's trainer would train: the built model's parameters (each shared one once), those under a
    --freeze_param prefix frozen."""
    from espzoo.models.build import build_model

    model = build_model(dict(config), device="meta")
    total = frozen = 0
    for name, param in model.named_parameters():
        total += param.numel()
        if any(name == m or name.startswith(m + ".") for m in freeze):
            frozen += param.numel()
    return {"total": total, "trainable": total - frozen, "frozen": frozen}


@pytest.mark.parametrize("variant", ["asr", "s2t", "s2t_ctc"])
@pytest.mark.parametrize("freeze", [(), ("encoder", "decoder")])
def test_plan_counts_what_trains(variant: str, freeze: tuple[str, ...], request: pytest.FixtureRequest,
                                 tmp_path: Path) -> None:
    from espzoo.transfer.plan import TransferOptions, plan_transfer

    repo = request.getfixturevalue({"asr": "tiny_repo_char", "s2t": "tiny_s2t", "s2t_ctc": "tiny_s2t_ctc"}[variant])
    if variant == "s2t_ctc" and "decoder" in freeze:
        freeze = ("encoder", "ctc")  # OWSM-CTC has no decoder
    lang = "top" if variant != "asr" else None  # a new language token: the vocabulary tensors grow, and count
    plan = plan_transfer(str(repo), TransferOptions(freeze=freeze, lang=lang), workdir=tmp_path)
    counts = plan.summary()["parameters"]
    expected = espnet_counts(plan.target_config, freeze)
    assert {k: counts[k] for k in expected} == expected
    assert counts["share"] == pytest.approx(expected["trainable"] / expected["total"])
    assert (counts["frozen"] > 0) == bool(freeze)


def test_plan_prints_the_count_and_lora_takes_it_over(tiny_repo_char: Path, tmp_path: Path) -> None:
    env = client_env(OFFLINE, tmp_path / "hf")
    people = subprocess.run([ESPZOO, "plan", str(tiny_repo_char), "--freeze", "encoder"], env=env,
                            capture_output=True, text=True, timeout=300)
    assert people.returncode == 0, people.stderr[-2000:]
    line = next(x for x in people.stderr.splitlines() if x.startswith("trainable "))
    from espzoo.transfer.plan import TransferOptions, plan_transfer

    counts = plan_transfer(str(tiny_repo_char), TransferOptions(freeze=("encoder",))).summary()["parameters"]
    assert f"trainable {counts['trainable']:,} of {counts['total']:,}" in line
    assert f"frozen {counts['frozen']:,}" in line

    lora = subprocess.run([ESPZOO, "plan", str(tiny_repo_char), "--lora", "4", "--json"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert lora.returncode == 0, lora.stderr[-2000:]
    data = json.loads(lora.stdout)
    adapters, params = data["adapters"], data["summary"]["parameters"]
    assert params == {k: adapters[k] for k in ("total", "trainable", "frozen", "share")}
    assert params["total"] > counts["total"]  # the adapters are new parameters
    assert params["trainable"] < counts["total"] - counts["frozen"]  # most of the base is frozen under LoRA
