"""The HF-compatible mirror: repos from a folder or the HF cache, the Hub's API and LFS routes, uploads and commits,
and `mirror add`. Test-only faults live apart (faults) and reach the handlers only through the server.
"""

from espzoo.utils.lazy import attach, faces

__getattr__, __dir__, __all__ = attach(
    __name__,
    faces(
        server="MirrorServer",
        sources="FolderSource CacheSource",
        add="add_from_cache",
    ),
)
