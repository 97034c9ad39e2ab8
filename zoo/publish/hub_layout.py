"""An experiment dir, laid out as an ESPnet model repo on the Hugging Face Hub.

    from espzoo.publish import export
    export("exp/bn_ft", "hub_repo/")            # then: huggingface-cli upload org/name hub_repo/

The layout is the one ESPnet's recipes upload (and espnet_model_zoo / espzoo pull read):

    README.md                                   model card: front matter, results, how to use, provenance
    meta.yaml                                   files.asr_model_file, yaml_files.asr_train_config, versions
    exp/<name>/config.yaml                      the training config, its paths relative to the repo root
    exp/<name>/valid.acc.ave.pth                the averaged weights (OUT/model.pth)
    exp/<name>/espzoo/{provenance,plan}.json    how the model was made
    exp/<name>/images/*.png                     ESPnet's per-epoch plots (loss, acc, ...), shown in the card
    exp/asr_stats_raw_<tokens>/train/feats_stats.npz
    data/token_list/<tokens>/tokens.txt         (and bpe.model for sentencepiece models)

ESPnet resolves a config's relative paths from the working directory, and its recipes run from the repo
root: `Speech2Text("exp/<name>/config.yaml", "exp/<name>/valid.acc.ave.pth")` works there, from these files
alone. The folder appears complete or not at all (built under a temporary name, then renamed).
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from espzoo.decode import curves
from espzoo.errors import ExportError
from espzoo.models.bundle import resolve_config_paths
from espzoo.models.compat import inference_class
from espzoo.models.lm import DEFAULT_WEIGHT, lm_folder
from espzoo.models.s2t import PROVENANCE_SECTION
from espzoo.repo import (
    CONFIG_NAME,
    LM_DECODE_NAME,
    LM_DIR,
    STATS_NAME,
    config_sample_rate,
    parse_token_list,
    stats_reference,
)
from espzoo.tasks import task_of
from espzoo.utils.fs import public_mode, replace_dir
from espzoo.utils.redact import public
from espzoo.utils.yaml_io import load_yaml

MODEL_FILE = "valid.acc.ave.pth"


@dataclass(frozen=True)
class ExportOptions:
    """Model-card fields; None takes them from OUT/provenance.json where it says."""

    name: str | None = None  # the exp/<name> folder; default asr_<OUT's name>
    repo_id: str | None = None  # where it will be uploaded, for the card's usage snippets
    language: str | None = None
    datasets: list[str] = field(default_factory=list)
    license: str = "cc-by-4.0"  # what ESPnet's recipes put on their uploads
    overwrite: bool = False
    weights: str = "merge"  # a LoRA experiment: "merge" (a plain ESPnet model) or "adapter-only" (espzoo.lora)


def export(out_dir: str | Path, dest: str | Path, options: ExportOptions | None = None) -> Path:
    """Write the ESPnet Hub layout of experiment dir `out_dir` to `dest`; return `dest`."""
    try:
        return _export(Path(out_dir), Path(dest), options)
    except OSError as error:
        raise ExportError(f"cannot write {dest} ({error.strerror or error}); check the path and free disk space.") \
            from error


def _export(out_dir: Path, dest: Path, options: ExportOptions | None) -> Path:
    options = options or ExportOptions()
    experiment = _read_experiment(out_dir)
    check_weights_only(experiment.checkpoint)  # before anything is written: a published pickle runs on every load
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())) and not options.overwrite:
        raise ExportError(f"{dest} exists and is not empty; choose another --out or pass --overwrite.")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    public_mode(tmp, directory=True)  # mkdtemp makes it 0700: the repo gets the user's umask like any folder
    try:
        _write_layout(experiment, tmp, options)
        replace_dir(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def check_weights_only(checkpoint: Path) -> None:
    """ExportError (one sentence) unless `checkpoint` holds only tensors: a pickle that asks for Python objects
    would run code on every machine that loads the published model."""
    from espzoo.errors import UnsafeCheckpointError
    from espzoo.models.bundle import load_state_dict

    try:
        load_state_dict(checkpoint)  # weights_only, memory-mapped: nothing but tensors is built
    except UnsafeCheckpointError as err:
        found = re.search(r"\(([\w.]+)\)", str(err))
        what = f" ({found.group(1)})" if found else ""
        raise ExportError(f"{checkpoint} is not a weights-only checkpoint: its pickle asks for Python "
                          f"objects{what} and would run code wherever it is loaded, so it is not published; train "
                          "the model again with espzoo finetune.") from None


@dataclass(frozen=True)
class _Experiment:
    root: Path
    config: dict[str, Any]  # as written in OUT (paths relative to OUT)
    resolved: dict[str, Any]  # paths absolute
    checkpoint: Path
    stats_file: Path | None
    bpemodel: Path | None
    token_list: list[str]
    provenance: dict[str, Any]
    results: list[dict[str, Any]]  # OUT/eval/*/result.json, without per-utterance rows
    images: list[Path] = field(default_factory=list)  # ESPnet's per-epoch plots for the card (espzoo.decode.curves)


def _read_experiment(root: Path) -> _Experiment:
    if not root.is_dir():
        raise ExportError(f"{root} is not a folder; pass the experiment dir that espzoo finetune --out wrote.")
    for name in ("config.yaml", "model.pth"):
        if not (root / name).is_file():
            raise ExportError(
                f"{root} has no {name}; it is not a finished experiment dir (run espzoo finetune to the end, "
                "or --resume it)."
            )
    config = load_yaml((root / "config.yaml").read_text(encoding="utf-8"))
    if not isinstance(config, dict):
        raise ExportError(f"{root / 'config.yaml'} is not an ESPnet config (expected a mapping).")
    resolved = resolve_config_paths(config, root)
    token_list = resolved.get("token_list")
    if isinstance(token_list, str):
        token_list = parse_token_list(Path(token_list).read_text(encoding="utf-8"), token_list)
    if not isinstance(token_list, list) or not token_list:
        raise ExportError(f"{root / 'config.yaml'} has no token_list; the model cannot be decoded without it.")
    needs_stats, stats_value = stats_reference(resolved)
    stats_file = _existing(root, stats_value, STATS_NAME)
    if needs_stats and stats_file is None:
        raise ExportError(f"{root} has no feats_stats.npz, which the model's global_mvn normalization needs.")
    bpemodel = _existing(root, resolved.get("bpemodel"), "bpe.model") if resolved.get("token_type") == "bpe" else None
    if resolved.get("token_type") == "bpe" and bpemodel is None:
        raise ExportError(f"{root} has no bpe.model, which the model's bpe tokens need to become text.")
    # An exported repo is published: no secrets, and no paths of this machine (an older OUT may hold both).
    provenance = public(_read_json(root / "provenance.json"), root)
    results = []
    for path in sorted((root / "eval").glob("*/result.json")):
        result = _read_json(path)
        result.pop("rows", None)
        result.pop("per_utterance", None)
        result.setdefault("data", path.parent.name)
        results.append(result)
    return _Experiment(
        root=root,
        config=config,
        resolved=resolved,
        checkpoint=root / "model.pth",
        stats_file=stats_file,
        bpemodel=bpemodel,
        token_list=[str(t) for t in token_list],
        provenance=provenance,
        results=results,
        images=curves.for_card(curves.find(root).images),
    )


def _write_layout(experiment: _Experiment, dest: Path, options: ExportOptions) -> None:
    config = dict(experiment.resolved)
    token_type = str(config.get("token_type") or "char")
    task = task_of(config)
    prefix = task.family  # ESPnet's recipe names: exp/asr_* or exp/s2t_*
    name = options.name or f"{prefix}_{experiment.root.resolve().name}"
    exp = Path("exp") / name
    tokens_dir = Path("data") / "token_list" / _token_dir_name(token_type, experiment)
    stats = Path("exp") / f"{prefix}_stats_raw_{_token_dir_name(token_type, experiment)}" / "train" / "feats_stats.npz"

    (dest / exp / "espzoo").mkdir(parents=True)
    (dest / tokens_dir).mkdir(parents=True)
    from espzoo.lora.files import experiment_adapter, write_weights
    from espzoo.repo import ADAPTER_NAME

    adapter = experiment_adapter(experiment.root)
    whole = write_weights(experiment.checkpoint, adapter, dest / exp / MODEL_FILE, dest, options.weights)
    adapter = adapter if whole else experiment_adapter(dest)  # as written: the rank adapter.pth stores
    (dest / tokens_dir / "tokens.txt").write_text("\n".join(experiment.token_list) + "\n", encoding="utf-8")
    config["token_list"] = experiment.token_list  # inline, as ESPnet's own configs have it
    if experiment.bpemodel is not None:
        shutil.copyfile(experiment.bpemodel, dest / tokens_dir / "bpe.model")
        config["bpemodel"] = str(tokens_dir / "bpe.model")
    if experiment.stats_file is not None:
        (dest / stats.parent).mkdir(parents=True)
        shutil.copyfile(experiment.stats_file, dest / stats)
        config["normalize_conf"] = {**(config.get("normalize_conf") or {}), "stats_file": str(stats)}
    config["output_dir"] = str(exp)
    if config.get("frontend", "default") == "default" and "fs" not in (config.get("frontend_conf") or {}):
        # ESPnet's default frontend assumes 16 kHz; saying so lets readers of the repo (and bundle) know the rate.
        config["frontend_conf"] = {**(config.get("frontend_conf") or {}), "fs": 16000}
    # Training-time paths point into the user's machine: keep them readable but relative, never absolute.
    for key in ("train_data_path_and_name_and_type", "valid_data_path_and_name_and_type"):
        config[key] = [[_portable(entry[0], experiment.root), *entry[1:]] for entry in config.get(key) or []]
    for key in ("train_shape_file", "valid_shape_file"):
        config[key] = [_portable(path, experiment.root) for path in config.get(key) or []]
    config["init_param"] = []  # a local path to the pretrained checkpoint; provenance.json names its source
    (dest / exp / "config.yaml").write_text(
        yaml.safe_dump(public(config, experiment.root), allow_unicode=True, sort_keys=False), encoding="utf-8"
    )
    if (experiment.root / "provenance.json").is_file():
        (dest / exp / "espzoo" / "provenance.json").write_text(
            json.dumps(experiment.provenance, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
    if (experiment.root / "plan.json").is_file():
        plan = public(_read_json(experiment.root / "plan.json"), experiment.root)
        (dest / exp / "espzoo" / "plan.json").write_text(json.dumps(plan, indent=2) + "\n", encoding="utf-8")

    model_key, config_key = task.model_file_key, task.train_config_key  # what ESPnet's pack writes
    meta = {
        "espnet": _version("espnet"),
        "files": {model_key: str(exp / MODEL_FILE)} if whole else {"adapter_file": ADAPTER_NAME},
        "python": sys.version.split()[0],
        "timestamp": time.time(),
        "torch": _version("torch"),
        "espzoo": _version("espzoo"),
        "yaml_files": {config_key: str(exp / "config.yaml")},
    }
    lm_card = ""
    if whole:  # LM hook: OUT/lm travels as exp/lm_train_<name>/, named in meta.yaml
        pass

        lm_card = export_lm(experiment.root, dest, meta, name, config.get("bpemodel"))
    (dest / "meta.yaml").write_text(yaml.safe_dump(meta, sort_keys=False), encoding="utf-8")
    for image in experiment.images:  # where ESPnet's recipes upload them: exp/<name>/images/
        (dest / exp / "images").mkdir(exist_ok=True)
        shutil.copyfile(image, dest / exp / "images" / image.name)
    card = model_card(experiment, options, exp, config) + lm_card
    if not whole and adapter is not None:
        card += (f"\n### LoRA adapter only\n\nThis repo holds a LoRA adapter (`{ADAPTER_NAME}`; rank {adapter.rank}, "
                 f"alpha {adapter.alpha or adapter.rank:g}, targets in `adapter_config.yaml`) for the base model "
                 f"`{adapter.base_repo}` at commit `{adapter.base_commit}`. `espzoo evaluate`/`transcribe` pull "
                 "that base and apply the adapter, and `espzoo finetune` on this repo continues training it; "
                 "ESPnet alone cannot load it (export merged for that).\n")
    (dest / "README.md").write_text(card, encoding="utf-8")


def model_card(experiment: _Experiment, options: ExportOptions, exp: Path, config: dict[str, Any]) -> str:
    """README.md: front matter the Hub indexes, results, how to use the model, where it came from."""
    provenance = experiment.provenance
    source = _source(provenance)
    language = options.language or provenance.get("language") or (provenance.get("languages") or [None])[0]
    datasets = options.datasets or list(provenance.get("datasets") or [])
    front: dict[str, Any] = {"tags": ["espnet", "audio", "automatic-speech-recognition"]}
    if language:
        front["language"] = language
    if datasets:
        front["datasets"] = datasets
    front["license"] = options.license
    repo = options.repo_id or f"<org>/{exp.name}"
    index = model_index(experiment.results, repo.split("/")[-1], datasets)
    if index:
        front["model-index"] = index  # the Hub shows these results (and indexes them) from the front matter
    encoder, decoder = config.get("encoder"), config.get("decoder")
    lines = [
        "---",
        yaml.safe_dump(front, sort_keys=False).rstrip(),
        "---",
        "",
        f"## ESPnet2 ASR model: `{repo}`",
        "",
        f"A {encoder} encoder / {decoder} decoder ASR model with {len(experiment.token_list)} "
        f"{config.get('token_type')} tokens, trained with ESPnet's own trainer"
        + (f", fine-tuned from [`{source[0]}`](https://huggingface.co/{source[0]})" if source[0] else "")
        + (f" at commit `{source[1]}`" if source[1] else "")
        + " with espzoo.",
        "",
        "### Results",
        "",
    ]
    if experiment.results:
        lines += _results_lines(experiment.results)
    else:
        lines.append("No evaluation was run before export (`espzoo evaluate OUT --data DIR` adds one).")
    if experiment.images:
        lines += ["", "### Training curves", "", "Per epoch, as ESPnet's trainer drew them (train and valid):", ""]
        lines += [f"![{image.stem}]({exp}/images/{image.name})" for image in experiment.images]
    lines += [
        "",
        "### How to use",
        "",
        "With espzoo:",
        "",
        "```bash",
        f"espzoo pull {repo}",
        f"espzoo transcribe {repo} audio.wav",
        f"espzoo evaluate {repo} --data data/test",
        "```",
        "",
        "```python",
        "from espzoo.decode import transcribe",
        "",
        f'print(transcribe("{repo}", ["audio.wav"]))',
        "```",
        "",
        "With ESPnet alone, from the downloaded repo's folder (the config's paths are relative to it):",
        "",
        "```python",
        "import soundfile",
        *_inference_lines(config, exp, provenance),
        'speech, rate = soundfile.read("audio.wav")  # mono, ' + f"{config_sample_rate(config)} Hz",
        "text, tokens, token_ids, hypothesis = speech2text(speech)[0]",
        "```",
        "",
        "### ESPnet releases",
        "",
        _releases_line(experiment),
        "",
        "### Provenance",
        "",
        *_provenance_lines(provenance, source),
        "",
        f"The full record is `{exp}/espzoo/provenance.json`; the training config is `{exp}/config.yaml`; the "
        f"transfer plan (which pretrained tensors were loaded) is `{exp}/espzoo/plan.json` when present.",
        "",
    ]
    return "\n".join(lines)


def _results_lines(results: list[dict[str, Any]]) -> list[str]:
    """The card's results table: orthographic and normalized rates with their 95% intervals, and the model it was
    compared with on the same data (`espzoo evaluate BEFORE OUT --data D`), before and after."""
    lines = [
        "| data | utterances | WER (%) | CER (%) | normalized WER (%) | normalized CER (%) | WER 95% CI | "
        "normalized WER 95% CI | beam | ctc weight |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    normalizers = set()
    for r in results:
        normalized = r.get("normalized") or {}
        ci95, normal_ci = r.get("ci95") or {}, normalized.get("ci95") or {}
        if normalized.get("normalizer"):
            normalizers.add(str(normalized["normalizer"]))
        lines.append(
            f"| {Path(str(r.get('data'))).name} | {r.get('utterances')} | {_percent(r.get('wer'))} | "
            f"{_percent(r.get('cer'))} | {_percent(normalized.get('wer'))} | {_percent(normalized.get('cer'))} | "
            f"{_interval(ci95.get('wer'))} | {_interval(normal_ci.get('wer'))} | {r.get('beam_size', '')} | "
            f"{r.get('ctc_weight', '')} |"
        )
    lines += ["", "WER and CER: (substitutions + deletions + insertions) / reference words or characters, over the "
              "whole set; 95% CI: the bootstrap interval over utterances (or speakers). Normalized: both "
              f"texts put through {', '.join(sorted(normalizers)) or 'a text normalizer'} first (lower case, no "
              "punctuation, Unicode NFKC)."]
    compared = [r for r in results if isinstance(r.get("baseline"), dict)]
    if compared:
        lines += ["", "Before and after, on the same utterances (after - before, with its 95% paired bootstrap "
                  "interval):", "", "| data | metric | before | after | after - before |", "|---|---|---:|---:|---:|"]
        for r in compared:
            baseline = r["baseline"]
            for key in ("wer", "cer", "normalized_wer", "normalized_cer"):
                metric = baseline.get(key)
                if not isinstance(metric, dict) or metric.get("difference") is None:
                    continue
                ci = metric.get("ci95") or [None, None]
                lines.append(
                    f"| {Path(str(r.get('data'))).name} | {key.replace('_', ' ').upper()} | "
                    f"{_percent(metric.get('a'))} | {_percent(metric.get('b'))} | {100 * metric['difference']:+.1f} "
                    + (f"[{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}]" if ci[0] is not None else "") + " |"
                )
        # a repo id as it is; a local folder by its name only (a published card holds no path of this machine)
        before = sorted({_model_name(str(r["baseline"].get("a"))) for r in compared})
        lines += ["", "Before: " + ", ".join(f"`{model}`" for model in before) + "."]
    return lines


def _model_name(model: str) -> str:
    return Path(model).name if Path(model).is_absolute() or Path(model).exists() else model


def model_index(results: list[dict[str, Any]], name: str, datasets: list[str]) -> list[dict[str, Any]] | None:
    """The card's `model-index` (the Hub's results schema, read by huggingface_hub's ModelCard/metadata_load): one
    result per evaluated data set, WER and CER in percent, the normalized ones where computed."""
    entries = []
    for r in results:
        metrics = []
        normalized = r.get("normalized") or {}
        for source, suffix in ((r, ""), (normalized, " (normalized)")):
            for key in ("wer", "cer"):
                if isinstance(source.get(key), (int, float)):
                    metric: dict[str, Any] = {"type": key, "value": round(100 * source[key], 2),
                                              "name": f"{key.upper()}{suffix}"}
                    if suffix:
                        metric["args"] = {"normalizer": normalized.get("normalizer")}
                    metrics.append(metric)
        if metrics:
            entries.append({"task": {"type": "automatic-speech-recognition", "name": "Automatic Speech Recognition"},
                            "dataset": _index_dataset(str(r.get("data")), datasets), "metrics": metrics})
    return [{"name": name, "results": entries}] if entries else None


def _index_dataset(data: str, datasets: list[str]) -> dict[str, Any]:
    """name/type/split of an evaluation's data: a Hub dataset's own (hf:ORG/NAME[:CONFIG]:SPLIT), else the card's
    one dataset, or the folder's name, with the folder's name as the split (data/test: test)."""
    from espzoo.data.hfdata import HF_SCHEME, parse_spec, source_name

    if data.startswith(HF_SCHEME):
        try:
            spec = parse_spec(data)
        except ValueError:
            spec = None
        if spec is not None:
            entry = {"name": spec.repo_id, "type": spec.repo_id, "split": spec.split}
            return {**entry, "config": spec.config} if spec.config else entry
    split = source_name(data)
    dataset = datasets[0] if len(datasets) == 1 else split
    return {"name": dataset, "type": dataset, "split": split}


def _interval(ci: Any) -> str:
    return f"{100 * ci[0]:.1f}–{100 * ci[1]:.1f}" if isinstance(ci, list) and len(ci) == 2 else ""


def _inference_lines(config: dict[str, Any], exp: Path, provenance: dict[str, Any]) -> list[str]:
    """How ESPnet alone loads the model: asr_inference, or the S2T inference with the fine-tuning prompt."""
    task = task_of(config)
    module, cls = inference_class(task)
    if not task.prompted:
        return [
            f"from espnet2.bin.{module} import {cls}",
            "",
            f'speech2text = Speech2Text("{exp}/config.yaml", "{exp}/{MODEL_FILE}", beam_size=4)',
        ]
    prompt = (provenance.get(PROVENANCE_SECTION) or {}).get("lang") or "<eng>"
    return [
        f"from espnet2.bin.{module} import {cls}",
        "",
        f'speech2text = {cls}("{exp}/config.yaml", "{exp}/{MODEL_FILE}", lang_sym="{prompt}", task_sym="<asr>")',
    ]


def _releases_line(experiment: _Experiment) -> str:
    """Which ESPnet releases load the weights (ESPnet 202611 renamed tensors and renames the old names on load;
    202511 and older load non-strictly and would leave a tensor under a new name at random without a word)."""
    trained = (experiment.provenance.get("versions") or {}).get("espnet") or _version("espnet") or "?"
    trained = str(trained).split()[0]
    plan = _read_json(experiment.root / "plan.json")
    legacy = int((plan.get("summary") or {}).get("legacy_names") or 0)
    if legacy:
        return (f"Trained with ESPnet {trained}, saved under the tensor names of its pretrained model ({legacy} of "
                "them are names of ESPnet 202511 and earlier, which 202611 renames on load): ESPnet 202511 and "
                "earlier load it as it is, and so does 202611.")
    if trained[:6].isdigit() and int(trained[:6]) < 202611:
        return (f"Trained and saved with ESPnet {trained}: that release and its neighbours load it as it is, and "
                "ESPnet 202611 renames the tensor names that changed in it on load.")
    return (f"Trained with ESPnet {trained}, saved under the tensor names of its pretrained model: it loads in the "
            "ESPnet releases that load that model.")


def _provenance_lines(provenance: dict[str, Any], source: tuple[str | None, str | None]) -> list[str]:
    """The parts of provenance.json a reader of the card wants, one bullet each (absent ones left out)."""
    lines = []
    local = (provenance.get("source") or {}).get("model") if isinstance(provenance.get("source"), dict) else None
    if source[0] or local:
        lines.append(f"- pretrained model: `{source[0] or local}`" + (f" at commit `{source[1]}`" if source[1] else ""))
    if provenance.get("epochs"):
        averaged = (provenance.get("model") or {}).get("averaged_from")
        lines.append(f"- epochs: {provenance['epochs']}" + (f" (weights: `{averaged}`)" if averaged else ""))
    if provenance.get("normalize"):
        lines.append(f"- normalization stats: {provenance['normalize']}")
    for name, data in (provenance.get("data") or {}).items():
        if isinstance(data, dict) and data.get("num_utterances") is not None:
            minutes = float(data.get("total_seconds") or 0) / 60
            lines.append(f"- data `{name}`: {data['num_utterances']} utterances, {minutes:.1f} min")
    versions = provenance.get("versions") or {}
    if isinstance(versions, dict) and versions:
        shown = ", ".join(f"{k} {str(v).split()[0]}" for k, v in versions.items() if v)
        lines.append(f"- versions: {shown}")
    command = provenance.get("command")
    if command:
        lines.append(f"- command: `{' '.join(map(str, command)) if isinstance(command, list) else command}`")
    return lines or ["- no provenance.json was found in the experiment dir"]


def _source(provenance: dict[str, Any]) -> tuple[str | None, str | None]:
    """(repo id, commit) of the pretrained model, from the keys provenance.json may use."""
    source = provenance.get("source")
    if isinstance(source, dict):
        return source.get("repo_id"), source.get("commit")
    if isinstance(source, str):
        return source, provenance.get("commit")
    return provenance.get("source_repo") or provenance.get("repo_id"), provenance.get("commit")


def _token_dir_name(token_type: str, experiment: _Experiment) -> str:
    if token_type != "bpe" or experiment.bpemodel is None:
        return token_type
    return f"bpe_{_sentencepiece_kind(experiment.bpemodel)}{len(experiment.token_list)}"


def _sentencepiece_kind(path: Path) -> str:
    """"unigram" or "bpe" (ESPnet's bpemode), read from the model's own proto."""
    try:
        from sentencepiece import sentencepiece_model_pb2

        proto = sentencepiece_model_pb2.ModelProto()
        proto.ParseFromString(path.read_bytes())
        return {1: "unigram", 2: "bpe"}.get(proto.trainer_spec.model_type, "bpe")
    except Exception:  # an unreadable proto still exports; only the folder name is less specific
        return "bpe"


def _existing(root: Path, configured: Any, default: str) -> Path | None:
    for candidate in (configured, root / default):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def _portable(path: Any, root: Path) -> str:
    text = str(path)
    try:
        return str(Path(text).resolve().relative_to(root.resolve()))
    except ValueError:
        return Path(text).name if Path(text).is_absolute() else text


def _percent(rate: Any) -> str:
    return f"{100 * rate:.1f}" if isinstance(rate, (int, float)) else "n/a"


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ExportError(f"{path} is not valid JSON ({error}); fix or remove it.") from error
    return data if isinstance(data, dict) else {}


def export_lm(out: Path, dest: Path, meta: dict[str, Any], name: str, bpemodel: str | None) -> str:
    """Copy OUT/lm into the export `dest` as ESPnet's recipes lay it out (`exp/lm_train_<name>/config.yaml`,
    `valid.loss.best.pth`), name it in `meta` (files.lm_file, yaml_files.lm_train_config), and return the model
    card's paragraph about it ("" when OUT has no LM). The checkpoint must hold only tensors."""
    if not (Path(out) / LM_DIR / CONFIG_NAME).is_file():
        return ""
    pass

    lm = lm_folder(Path(out) / LM_DIR)
    check_weights_only(lm.checkpoint)
    folder = Path("exp") / f"lm_train_{name}"
    (dest / folder).mkdir(parents=True)
    checkpoint = folder / "valid.loss.best.pth"
    shutil.copyfile(lm.checkpoint, dest / checkpoint)
    config = dict(lm.config, bpemodel=bpemodel, output_dir=str(folder))
    (dest / folder / CONFIG_NAME).write_text(yaml.safe_dump(config, allow_unicode=True, sort_keys=False),
                                             encoding="utf-8")
    weight = lm.weight if lm.weight is not None else DEFAULT_WEIGHT
    (dest / folder / LM_DECODE_NAME).write_text(yaml.safe_dump({"lm_weight": weight}), encoding="utf-8")
    meta.setdefault("files", {})["lm_file"] = str(checkpoint)
    meta.setdefault("yaml_files", {})["lm_train_config"] = str(folder / CONFIG_NAME)
    return (f"\n### Language model\n\nA token-level {config.get('lm')} LM on the model's own {len(lm.tokens)} tokens "
            f"(`{checkpoint}`, trained by ESPnet's LM task), fused in the beam search with weight {weight:g} "
            "(`espzoo evaluate`/`transcribe` do so by default; `--lm none` turns it off). With ESPnet alone: "
            f"`Speech2Text(..., lm_train_config=\"{folder / CONFIG_NAME}\", lm_file=\"{checkpoint}\", "
            f"lm_weight={weight:g})`.\n")
