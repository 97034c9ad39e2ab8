"""The `espzoo` command line: a thin face over the library, one module per command group."""
