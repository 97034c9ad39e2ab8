"""What a model is: an ESPnet repo opened as a Bundle (config, checkpoint, tokens, stats), the ESPnet model built
from its config (on the meta device for planning), the SSL/Whisper upstreams it needs offline, the S2T family's
prompts and tokens, and what differs between ESPnet releases (compat). Which task a model is: espzoo.tasks.
"""

from espzoo.utils.lazy import attach, faces

__getattr__, __dir__, __all__ = attach(
    __name__,
    faces(
        bundle="Bundle open_bundle load_state_dict resolve_config_paths",
        build="build_model TargetModel target_shapes loader_renames",
        s2t="Prompt default_prompt language_token",
    ),
)
