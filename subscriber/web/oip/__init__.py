"""The Open Inference Protocol (KServe v2, HTTP/REST) face of a node (SPEC §14).

``routes`` answers ``/v2``: health, metadata, inference, the model repository's index and
load; ``tensors`` reads a request's tensors (JSON or Triton's binary tensor data) and writes an
answer's; ``metadata`` says what each model takes and gives; ``errors`` answers every error
under ``/v2`` as ``{"error": …}``. Clients that speak the protocol (``tritonclient``, KServe's
and Seldon's) work unchanged.

May import: the rest of ``subscriber.web`` and what it may import.
"""
