"""How many of ESPnet's own egs2 ASR training configs espzoo plans, offline, from a hub-layout repo alone.

    nice python bench/egs2_coverage.py [--only NAME] [--keep DIR]

Input: tests/configs/egs2/*.yaml, a stratified sample of egs2/*/asr1/conf/{,tuning/}train*.yaml (the model keys of
each, with its source path and commit in the first line; INDEX.tsv lists the population it was drawn from and each
config's stratum). For each config:
1. shrink it (small widths, 2 blocks; the layer types, options and upstream names as published), with a 31-token
   char vocabulary and, where ESPnet's recipe would give it one (asr.sh's --feats_normalize), global_mvn stats;
2. build the model with ESPnet (espzoo.models.build.build_model, random weights; SSL and Whisper upstreams of a small
   size of the same class, as tests/test_upstreams.py does) and lay it out as ESPnet uploads a model (meta.yaml,
   exp/.../config.yaml, the checkpoint, the stats file);
3. run `espzoo plan REPO --vocab keep` and `espzoo plan REPO --vocab bpe:40:TEXT` through the CLI's entry point,
   with HF_HUB_OFFLINE=1 and every HTTP(S) request sent to a dead proxy on 127.0.0.1.
Each config is checked in a child forked from the bench after it imported torch, ESPnet and espzoo (and built
nothing): configs do not share state, and the imports are paid once.

A config passes when both plans exit 0 (a Whisper-tokenizer model's refusal of a new vocabulary, one sentence, is
what it must do, so it counts as passing). A config whose model cannot be built offline fails at step 2, with
espzoo's sentence. Printed: one line per config, then the share per stratum and the share post-stratified to the
population (each stratum weighted by its count in INDEX.tsv), LAST.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "tests" / "configs" / "egs2"
INDEX = CONFIGS / "INDEX.tsv"
TEXT = ROOT / "zoo" / "assets" / "speech" / "es" / "train" / "text"
sys.path.insert(0, str(ROOT / "tests"))  # the small upstreams and the token list of the tests, defined once there

EN_CHARS = ["<blank>", "<unk>", "<space>", *"etaoinshrdlucmwfgypbvkxjqz'", "<sos/eos>"]
SMALL = 32  # model width
# Encoder/decoder options that set a size: option -> its small value (counts are capped, widths replaced).
_WIDTHS = {"output_size": SMALL, "linear_units": 64, "cgmlp_linear_units": 64, "hidden_size": SMALL,
           "attention_heads": 2, "aheads": 2, "adim": SMALL, "joint_space_size": SMALL, "cnn_module_kernel": 7,
           "cgmlp_conv_kernel": 7, "merge_conv_kernel": 7, "block_size": 8, "hop_size": 4, "look_ahead": 4,
           "aconv_chans": 4, "aconv_filts": 5, "n_head": 2, "embed_dim": SMALL}
_COUNTS = {"num_blocks": 2, "num_layers": 1, "n_layers": 1, "elayers": 1, "dlayers": 1}


def index() -> dict[str, str]:
    """<recipe>__<name> -> stratum, for every config of the population (INDEX.tsv; strata by file name)."""
    out = {}
    for line in INDEX.read_text().splitlines():
        if line.startswith(("#", "path\t")):
            continue
        path, group = line.split("\t")[:2]
        out[f"{path.split('/')[1]}__{Path(path).stem}"] = group
    return out


def shrink(config: dict[str, Any]) -> dict[str, Any]:
    """The config at small dimensions: same keys and layer types, widths and depths cut."""
    out = {k: v for k, v in config.items() if k not in ("freeze_param", "use_lora", "lora_conf")}
    for key in ("encoder_conf", "decoder_conf", "joint_net_conf", "postencoder_conf"):
        if isinstance(out.get(key), dict):
            out[key] = _shrink_dict(out[key])
    conf = out.get("encoder_conf") or {}
    if conf.get("interctc_layer_idx"):
        conf["interctc_layer_idx"] = [1]
        aux = (out.get("model_conf") or {}).get("aux_ctc")
        if aux:
            out["model_conf"] = {**out["model_conf"], "aux_ctc": {"1": next(iter(aux.values()))}}
    if isinstance(conf.get("multicgmlp_kernel_sizes"), str):
        conf["multicgmlp_kernel_sizes"] = "3,7"
    if out.get("preencoder") == "linear":
        out["preencoder_conf"] = {**out["preencoder_conf"], "output_size": 20}
    if out.get("encoder") == "whisper" or out.get("decoder") == "whisper":
        out.update(token_type="whisper_multilingual", bpemodel="whisper_multilingual")
    adapter = out.get("adapter_conf")
    if isinstance(adapter, dict) and adapter.get("target_layers"):
        out["adapter_conf"] = {**adapter, "target_layers": [0, 1]}
    return out


def _shrink_dict(conf: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in conf.items():
        if isinstance(value, dict):
            value = _shrink_dict(value)
        elif isinstance(value, list) and all(isinstance(v, dict) for v in value):
            value = [_shrink_dict(v) for v in value]
        elif key in _WIDTHS and isinstance(value, int) and not isinstance(value, bool):
            value = min(value, _WIDTHS[key])
        elif key in _COUNTS and isinstance(value, int) and not isinstance(value, bool):
            value = min(value, _COUNTS[key])
        out[key] = value
    return out


def reference_shapes(config: dict[str, Any]) -> dict[str, tuple[int, ...]] | None:
    """A small upstream of the same class for SSL and Whisper models (None: the config names none)."""
    from test_upstreams import _tiny_whisper_shapes

    frontend_conf = config.get("frontend_conf") or {}
    if config.get("frontend") == "fused":  # each s3prl front end of the list, under its own prefix
        shapes = {}
        for i, entry in enumerate(frontend_conf.get("frontends") or []):
            if entry.get("frontend_type") == "s3prl":
                one = _tiny_ssl_shapes((entry.get("frontend_conf") or {}).get("upstream", "")) or {}
                shapes.update({k.replace("frontend.", f"frontend.frontends.{i}.", 1): v for k, v in one.items()})
        return shapes or None
    if config.get("frontend") == "s3prl":
        return _tiny_ssl_shapes((frontend_conf.get("frontend_conf") or {}).get("upstream", ""))
    if "whisper" in (config.get("encoder"), config.get("decoder"), config.get("frontend")):
        shapes = _tiny_whisper_shapes(len(EN_CHARS))
        if config.get("frontend") == "whisper":
            return {k.replace("encoder.encoders.", "frontend.whisper.encoder.")  # the whole model, as ESPnet's
                    .replace("decoder.decoders.", "frontend.whisper.decoder."): v for k, v in shapes.items()}
        return shapes
    return None


def _tiny_ssl_shapes(upstream: str) -> dict[str, tuple[int, ...]] | None:
    from test_upstreams import _tiny_hubert_shapes, _tiny_wavlm_shapes, _tiny_xls_r_shapes

    if upstream.startswith("wavlm"):
        return _tiny_wavlm_shapes()
    if upstream.startswith("hubert"):
        return _tiny_hubert_shapes()
    if upstream.startswith(("wav2vec2", "xls_r", "xlsr")):
        return _tiny_xls_r_shapes()
    return None


def make_repo(name: str, published: dict[str, Any], folder: Path) -> Path:
    """A hub-layout repo of the shrunk config with an ESPnet-built, random-weight checkpoint."""
    import numpy as np
    import torch
    import yaml

    from espzoo.models.build import build_model

    config = shrink(published)
    reference = reference_shapes(config)
    if reference and config.get("preencoder") == "linear" and config.get("frontend") in ("s3prl", "whisper"):
        width = next(v[0] for k, v in reference.items() if k.endswith(("ln_post.weight", "layer_norm.weight")))
        config["preencoder_conf"] = {**config["preencoder_conf"], "input_size": width}
    config.setdefault("token_type", "char")
    config.update(token_list=EN_CHARS, bpemodel=config.get("bpemodel"))
    exp = folder / "exp" / f"asr_{name}"
    exp.mkdir(parents=True)
    if "normalize" not in config:  # asr.sh's --feats_normalize global_mvn, the recipes' default
        probe = build_model({**config, "normalize": None}, device="meta", reference=reference)
        dims = probe.frontend.output_size() if probe.frontend is not None else config.get("input_size", 80)
        stats = folder / "exp" / "asr_stats" / "train" / "feats_stats.npz"
        stats.parent.mkdir(parents=True)
        rng = np.random.default_rng(0)
        np.savez(stats, count=np.array(100), sum=rng.normal(size=dims) * 100, sum_square=np.full(dims, 300.0))
        config.update(normalize="global_mvn", normalize_conf={"stats_file": str(stats)})
    torch.manual_seed(0)
    model = build_model(config, reference=reference)
    torch.save(model.state_dict(), exp / "valid.acc.ave.pth")
    if config.get("normalize") == "global_mvn":
        config["normalize_conf"] = {"stats_file": "exp/asr_stats/train/feats_stats.npz"}  # relative, as published
    (exp / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (folder / "meta.yaml").write_text(yaml.safe_dump({"espnet": "202511", "files": {
        "asr_model_file": f"exp/asr_{name}/valid.acc.ave.pth"}, "yaml_files": {
        "asr_train_config": f"exp/asr_{name}/config.yaml"}}))
    return folder


def _offline_env(home: Path) -> dict[str, str]:
    dead = "http://127.0.0.1:9"  # the discard port: a download attempt fails at once
    return dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(home / "hf"), ESPZOO_HOME=str(home / "espzoo"),
                HTTP_PROXY=dead, HTTPS_PROXY=dead, http_proxy=dead, https_proxy=dead,
                NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")


def _plan(repo: Path, vocab: str) -> tuple[bool, str]:
    """`espzoo plan REPO --vocab VOCAB` through the CLI's own entry point: (passed, its error sentence)."""
    import contextlib
    import io

    from espzoo.cli.main import run

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = run(["plan", str(repo), "--vocab", vocab])
    lines = [ln for ln in err.getvalue().splitlines() if ln.strip()]
    message = next((ln for ln in lines if ln.startswith("error:")), lines[-1] if lines else f"exit {code}")
    if code == 0:
        return True, ""
    if "Whisper's own tokenizer" in message and vocab != "keep":
        return True, "new vocabulary refused by design (Whisper tokenizer)"
    return False, message


def check(path: Path, work: Path) -> tuple[bool, str]:
    """Build the repo (fails: the build's sentence), then plan it with both vocabularies."""
    import yaml

    from espzoo.errors import EspzooError

    published = yaml.safe_load(path.read_text())
    repo = work / path.stem
    try:
        make_repo(path.stem.split("__")[-1], published, repo)
    except EspzooError as err:
        return False, f"build: {err}"
    except Exception as err:  # noqa: BLE001 (the table records every failure, whatever it is)
        return False, f"build: internal {type(err).__name__}: {str(err).splitlines()[0][:200]}"
    message = ""
    for vocab in ("keep", f"bpe:40:{TEXT}"):
        ok, message = _plan(repo, vocab)
        if not ok:
            return False, f"plan --vocab {vocab.split(':')[0]}: {message}"
    return True, message


def _check_in_child(path: Path, work: Path, send: Any) -> None:
    send.send(check(path, work))


def check_forked(path: Path, work: Path, timeout: float = 900) -> tuple[bool, str]:
    """check() in a child forked from this process, which has imported torch, ESPnet and espzoo but built nothing:
    each config starts from the same clean state (nothing one config patches or caches reaches the next), and the
    imports, most of a plan's time, are paid once."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_check_in_child, args=(path, work, send))
    child.start()
    send.close()
    if not receive.poll(timeout):
        child.kill()
        child.join()
        return False, f"timed out after {timeout:.0f} s"
    try:
        outcome = receive.recv()
    except EOFError:
        outcome = None
    child.join()
    return outcome or (False, f"the check process died (exit {child.exitcode})")


# A failure that is the installed ESPnet lacking what the config names: written by an older or newer ESPnet, or an
# option the config misspells (which ESPnet itself refuses); espzoo's sentences for both start so.
_VERSION_GAP = ("The installed ESPnet", "unexpected keyword argument", "must be one of")


def summary(results: dict[str, list[tuple[bool, str]]], counts: dict[str, int]) -> None:
    """Per stratum, then the pass share post-stratified to the population: of the configs the installed ESPnet
    itself can build (an ESPnet version gap is left out), and of all configs, LAST."""
    passes = buildable = 0.0  # population estimates
    for group, outcome in sorted(results.items()):
        passed = sum(ok for ok, _ in outcome)
        gaps = sum(not ok and any(m in message for m in _VERSION_GAP) for ok, message in outcome)
        passes += counts.get(group, 0) * passed / len(outcome)
        buildable += counts.get(group, 0) * (len(outcome) - gaps) / len(outcome)
        print(f"  {group:10s} {passed}/{len(outcome)} pass ({gaps} the installed ESPnet cannot build); "
              f"population {counts.get(group, 0)}")
    covered = sum(counts.get(g, 0) for g in results)
    print(f"pass share post-stratified, of the configs the installed ESPnet can build: {passes / buildable:.0%}")
    print(f"pass share post-stratified to the population ({covered} configs): {passes / covered:.0%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="run the configs whose name contains this")
    parser.add_argument("--keep", type=Path, help="build the repos here and keep them")
    parser.add_argument("--from-log", type=Path, help="summarize the per-config lines of an earlier run's output")
    args = parser.parse_args()
    strata = index()
    counts: dict[str, int] = {}
    for group in strata.values():
        counts[group] = counts.get(group, 0) + 1
    results: dict[str, list[tuple[bool, str]]] = {}
    if args.from_log:
        for line in args.from_log.read_text().splitlines():
            if line.startswith(("pass  ", "FAIL  ")):
                name = line.split()[2]
                results.setdefault(strata[name], []).append((line.startswith("pass"), line.partition(" -- ")[2]))
        summary(results, counts)
        return
    paths = sorted(p for p in CONFIGS.glob("*.yaml") if not args.only or args.only in p.name)
    work = args.keep or Path(tempfile.mkdtemp(prefix="espzoo-egs2-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ.update(_offline_env(work))  # before huggingface_hub is imported: it reads HF_HUB_OFFLINE once
    os.chdir(work)  # what a build writes relative to the working directory (s3prl's `download_dir: ./hub`) stays there
    import espzoo.cli.main  # noqa: F401 (imported once, here, for every forked check)
    import espzoo.models.build  # noqa: F401
    from espzoo.models.espnet_env import import_asr_task

    import_asr_task()  # ESPnet's ASR task, as espzoo imports it (its shims for the running Python first)

    start = time.monotonic()
    for path in paths:
        group = strata[path.stem]
        ok, message = check_forked(path, work)
        results.setdefault(group, []).append((ok, message))
        print(f"{'pass' if ok else 'FAIL'}  {group:10s} {path.stem}" + (f"  -- {message}" if message else ""),
              flush=True)
    print(f"\n{sum(ok for o in results.values() for ok, _ in o)}/{sum(map(len, results.values()))} sample configs "
          f"pass ({time.monotonic() - start:.0f} s; load {os.getloadavg()[0]:.1f})")
    summary(results, counts)


if __name__ == "__main__":
    main()
