"""The application layer: the ``fks`` command line, the demo trainer, an embedded Redis."""

__all__: list[str] = []
