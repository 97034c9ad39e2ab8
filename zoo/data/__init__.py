"""User data in: Kaldi dirs, manifests (CSV/TSV/JSONL, Common Voice and FLEURS as downloaded) and Hugging Face
datasets, checked and converted into the Kaldi dirs ESPnet trains on.
"""

from espzoo.utils.lazy import attach, faces

__getattr__, __dir__, __all__ = attach(
    __name__,
    faces(
        sources="Dataset Problem load_dataset",
        convert="prepare",
        hfdata="is_hf_source",
    ),
)
