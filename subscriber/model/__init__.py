"""The served model: one immutable snapshot, swapped atomically after verification.

``holder`` owns the snapshot and the history; ``loader`` verifies a checkpoint before it may be
served (file, fields, ``probe``/``module_probe``, runners: ``inference``, ``numpy_runner``,
``module_runner``; what one request row costs: ``activations``, ``budget``); ``plan`` is the
one ordering rule; ``failures`` remembers refused files; ``events`` logs what the holder did.

May import: ``fetching``, ``runtime``, ``common``. Knows no Redis and no HTTP of its own (a
``redis-blob:`` fetch goes through ``fetching``).
"""
