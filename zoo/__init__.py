"""espzoo: fine-tune ESPnet's pretrained speech models from the Hugging Face Hub on your own data.

The public API, in the order data flows (catalog -> hub -> bundle -> transfer -> trainer -> evaluate; README.md):

    from espzoo import Catalog
    Catalog.load().search("bengali", task="asr")

Heavy modules (torch, espnet) are imported lazily by the functions that need them, so that
`import espzoo` and `espzoo search` stay fast.
"""

from espzoo.catalog import Catalog, CatalogEntry, CatalogError

__version__ = "0.1.0"

__all__ = ["Catalog", "CatalogEntry", "CatalogError", "__version__"]
