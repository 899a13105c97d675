"""Everything that talks to Redis, shared by trainers, operators and nodes.

``url`` parses every ``REDIS_URL`` form (SPEC §10: plain, TLS, Sentinel, Cluster); ``connect``
opens a client for it and follows a Sentinel's master; ``scripts`` holds the Lua scripts that
make a publication atomic; ``clock`` reads Redis's own ``TIME``, the fleet's one clock.

May import: ``common``'s plain modules (no checkpoint, no architecture).
"""
