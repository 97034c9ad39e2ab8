"""Small helpers every layer uses: atomic file writes (fs), espzoo's home and shipped files (home), secrets
kept out of what espzoo writes (redact), pipes with a deadline (pipe), lazy package faces (lazy).
"""

from espzoo.utils.lazy import attach, faces

__getattr__, __dir__, __all__ = attach(
    __name__,
    faces(
        fs="atomic_write replace_dir write_text copy_file public_mode",
        home="espzoo_home PACKAGE_ROOT",
    ),
)
