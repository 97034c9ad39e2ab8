"""espzoo: fine-tune ESPnet's pretrained speech models from the Hugging Face Hub on your own data.

The flow, scripted without the CLI (each name is imported on first use: `import espzoo` loads neither torch nor
ESPnet, so `espzoo search` stays fast):

    import espzoo
    espzoo.Catalog.load().search("bengali", task="asr")             # what exists
    snap = espzoo.pull("espnet/bn_openslr53")                        # cached, pinned, offline afterwards
    plan = espzoo.plan(snap.repo_id, espzoo.TransferOptions(vocab="data/train/text"))  # what will load
    result = espzoo.train.recipe(espzoo.FinetuneRequest(...))            # ESPnet's own trainer
    report = espzoo.decode("exp/bn_ft", "data/test")               # WER/CER
    espzoo.transcribe("exp/bn_ft", ["audio.wav"])
    espzoo.publish("exp/bn_ft", "hub_repo/"); espzoo.publish.upload(...)

The subpackages, in the order they import each other (README.md, "Layout"): catalog -> hub -> models -> data ->
lora -> transfer -> decode -> train -> publish, with serve (the HF-compatible mirror) beside hub; tasks (one row
per ESPnet task), repo (what an ESPnet repo is), errors and utils underneath them all.
"""

from espzoo.utils.lazy import attach

__version__ = "0.1.0"

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        "Catalog": "catalog.catalog",
        "CatalogEntry": "catalog.entries",
        "recommend": "catalog.recommendation",
        "pull": "hub.download",
        "open_bundle": "models.bundle",
        "TransferOptions": "transfer.plan",
        "plan": "transfer.plan:plan_transfer",
        "FinetuneRequest": "train.recipe",
        "finetune": "train.recipe",
        "TrainOptions": "train.options",
        "evaluate": "decode.report",
        "transcribe": "decode.runner",
        "DecodeOptions": "decode.recognizer",
        "export": "publish.hub_layout",
        "ExportOptions": "publish.hub_layout",
        "push": "publish.upload",
        "PushOptions": "publish.upload",
        "EspzooError": "errors",
    },
)
__all__ += ["__version__"]
