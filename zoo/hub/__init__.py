"""Getting models: pull a repo at a revision into the Hugging Face cache (parallel ranges, resumable, offline), verify,
list and remove what is cached, lock files, and refresh the catalog from the Hub. huggingface_hub's internals are
reached only from `hf`.
"""

from espzoo.utils.lazy import attach, faces

__getattr__, __dir__, __all__ = attach(
    __name__,
    faces(
        download="pull",
        session="Snapshot parse_repo_ref",
        cache="verify list_cached remove read_lock update_lock VerifyReport CachedModel",
        refresh="refresh_catalog RefreshResult",
    ),
)
