"""One port, many processes: ``fks serve --workers N`` and the operations that must reach them all.

``workers`` runs each uvicorn worker as its own node; ``siblings`` lets the workers of one port
talk over Unix sockets; ``operations`` carries an operator's reload or rollback to every worker
of the port, or says which did not follow.

May import: ``pipeline``, ``model``, ``fetching``, ``runtime``, ``common``. Never the HTTP face.
"""
