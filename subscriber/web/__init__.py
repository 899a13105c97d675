"""The HTTP face of a node: the FastAPI app and the ``/sac`` routes (SPEC §5).

A request comes in through the plain-ASGI guards (``bodyguard``: bounded bodies; ``auth``: the
optional API key), is parsed (``schemas``, ``inputs``), and answered from the node's served
snapshot (``predict``, ``benchmark``, ``routes``), with strict JSON (``strictjson``); a plain
``/sac/predict`` is answered in front of FastAPI by the same code (``hotpath``). ``app``
builds the application (``create_app``) or mounts the routes into yours (``mount``).

May import: everything below it (``subscriber.node``, ``process``, ``pipeline``, ``model``,
``fetching``, ``runtime``) and ``common``. Nothing imports it but the package's top and ``fks``.
"""
