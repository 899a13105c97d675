"""Where checkpoints come from: the model roots, and remote checkpoints fetched under deadlines.

``roots`` confines paths to the model roots (tiers 1–3 of SPEC §4); ``fetch`` turns a
:class:`~common.remote.RemoteRef` into a verified local file, through one byte stream per kind
(``transports``: S3/HTTP, ``redis-blob:``), each bounded by a ``deadline``; ``remote_tier``
lists the newest object under ``STAT_PAIR_RL_URL``.

May import: ``runtime``, ``common``.
"""
