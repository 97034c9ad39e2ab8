"""Sharing a model: an experiment exported as an ESPnet Hub repo (model card, meta.yaml, ESPnet's layout) and pushed
to the Hub or a mirror.
"""

from espzoo.utils.lazy import attach, faces

__getattr__, __dir__, __all__ = attach(
    __name__,
    faces(
        hub_layout="export ExportOptions",
        upload="push PushOptions",
    ),
)
