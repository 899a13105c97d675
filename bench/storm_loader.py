"""The storm's design probe: a helper process that verifies and loads checkpoints for no
one (argv: ROOT NICE). It reads one path per line on stdin and runs the node's whole
verify-and-load (``prepare_checkpoint``, default configuration, one BLAS/torch thread as a
node has) on it, at the given niceness; a failure ends it.

``bench.storm`` runs it beside the control (our server sent stale notices: everything but
the load) to measure what the storm would cost if the load ran in a low-priority process of
its own instead of on the server's load lane."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from common.settings import Settings
from subscriber.loader import LoadOptions, prepare_checkpoint
from subscriber.roots import ModelRoots
from subscriber.threads import limit_threads


def main() -> None:
    root, nice = Path(sys.argv[1]), int(sys.argv[2])
    os.nice(nice)
    limit_threads(1)
    roots = ModelRoots(Settings(model_dir=root, default_model_dir=root))
    options = LoadOptions()
    print("ready", flush=True)
    for line in sys.stdin:
        prepare_checkpoint(line.strip(), roots, options)


if __name__ == "__main__":
    main()
