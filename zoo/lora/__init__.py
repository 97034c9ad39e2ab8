"""LoRA adapters, as PEFT splits them: the torch-free config, the layer and putting it into a model, adapter
tensors in checkpoints, ESPnet's tasks with adapters, and adapters as files.
"""

from espzoo.utils.lazy import attach, faces

__getattr__, __dir__, __all__ = attach(
    __name__,
    faces(
        config="AdapterConfig LoraOptions",
        layer="LoRALinear apply_adapters merge_adapters AdapterSummary",
        weights="merged_state average_nbest_models",
        files="attach plan_adapters",
    ),
)
