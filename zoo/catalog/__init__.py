"""What exists: the catalog of ESPnet's Hub models (entries, search, facets), every language by ISO 639-3
code, and the recommendation of a starting model for a language.
"""

from espzoo.utils.lazy import attach, faces

__getattr__, __dir__, __all__ = attach(
    __name__,
    faces(
        catalog="Catalog Hit language_match",
        entries="CatalogEntry Result size_label parse_size shipped_catalog_path user_catalog_path",
        languages="Language Languages resolve owsm_token",
        recommendation="recommend Recommendation RecommendOptions Advice",
    ),
)
