"""The ``fks`` command line (SPEC §7, §8): serve, train, notify, status, convert, demo."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from common.settings import Settings, redact_url

__all__ = ["build_parser", "main"]


def _settings(args: argparse.Namespace, **extra: object) -> Settings:
    overrides: dict[str, object] = dict(extra)
    instance = getattr(args, "instance", None)
    if getattr(args, "several", False):  # fks serve/status: one or several (§13)
        if instance:  # over the environment's
            overrides["instance_id"] = instance[0]
            overrides["instance_ids"] = ",".join(instance)
    else:  # one instance (--instance, else FKS_INSTANCE_ID): FKS_INSTANCE_IDS is the server's
        overrides["instance_ids"] = ""
        if instance is not None:
            overrides["instance_id"] = instance
    if getattr(args, "redis_url", None):
        overrides["redis_url"] = args.redis_url
    return Settings(**overrides)  # type: ignore[arg-type]


def _logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from subscriber import create_app

    _logging(args.log_level)
    settings = _settings(args)
    logging.getLogger("fks").info(
        "serving instance%s %s, Redis %s",
        "s" if len(settings.instances) > 1 else "",
        ", ".join(settings.instances),
        redact_url(settings.redis_url),
    )
    if args.workers > 1:
        return _serve_workers(args, settings)
    uvicorn.run(
        create_app(settings), host=args.host, port=args.port, log_level=args.log_level,
        access_log=args.access_log, loop=args.loop, http=args.http,
    )  # fmt: skip
    return 0


def _serve_workers(args: argparse.Namespace, settings: Settings) -> int:
    """N uvicorn worker processes, each its own node ``<FKS_NODE_ID>-w<slot>``
    (``subscriber/process/workers.py``); the settings reach them through the environment."""
    import os
    import socket
    import tempfile

    import uvicorn

    from subscriber.process.workers import COUNT_ENV, SLOTS_ENV

    os.environ["FKS_INSTANCE_ID"] = settings.instance_id
    os.environ["FKS_INSTANCE_IDS"] = ",".join(settings.instances)
    os.environ["REDIS_URL"] = settings.redis_url
    os.environ.setdefault("FKS_NODE_ID", f"{socket.gethostname()[:60]}:{os.getpid()}")
    with tempfile.TemporaryDirectory(prefix="fks-workers-") as slots:
        os.environ[SLOTS_ENV] = slots
        os.environ[COUNT_ENV] = str(args.workers)  # a worker's siblings: the other slots
        uvicorn.run(
            "subscriber.web.app:create_app", factory=True, workers=args.workers, host=args.host,
            port=args.port, log_level=args.log_level, access_log=args.access_log,
            loop=args.loop, http=args.http,
        )  # fmt: skip
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    import torch

    from fks.trainer import TrainConfig, train
    from publisher import CheckpointNotifier

    _logging("warning" if args.quiet else "info")
    torch.set_num_threads(args.threads)
    settings = _settings(args)
    config = TrainConfig(
        directory=Path(args.dir), steps=args.steps, every=args.every, keep=args.keep,
        seed=args.seed, warmup=args.warmup, progress=not args.quiet, format=args.format,
        algo=args.algo, model_name=f"{args.algo}_stat_pair",
    )  # fmt: skip
    with CheckpointNotifier(settings=settings) as notifier:
        summary = train(config, notifier)
    announced = sum(r.result.sent for r in summary.checkpoints)
    returns = [r.eval_return for r in summary.checkpoints]
    print(
        f"trained {summary.steps} steps in {summary.seconds:.1f} s "
        f"({summary.steps_per_second:.0f} steps/s); {len(summary.checkpoints)} checkpoints, "
        f"{announced} announced"
        + (f"; eval return {returns[0]:.2f} -> {returns[-1]:.2f}" if returns else "")
    )
    return 0


def _metadata(items: list[str], command: str) -> dict[str, str] | None:
    metadata: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            print(f"fks {command}: --meta expects key=value, got {item!r}", file=sys.stderr)
            return None
        metadata[key] = value
    return metadata


def cmd_notify(args: argparse.Namespace) -> int:
    from common.remote import is_url
    from publisher import CheckpointNotifier
    from publisher.rollout import format_acks

    metadata = _metadata(args.meta, "notify")
    if metadata is None:
        return 2
    settings = _settings(args)
    travels = args.upload_to is not None or args.via == "redis" or settings.upload_to is not None
    # os.path.exists: a path this OS cannot look up (a name over 255 bytes, one over
    # PATH_MAX) is absent, where Path.exists raises
    absent = not is_url(args.path) and not os.path.exists(args.path)
    if absent and travels:
        print(
            f"fks notify: {args.path} does not exist on this machine: nothing to send",
            file=sys.stderr,
        )
        return 1
    with CheckpointNotifier(settings=settings) as notifier:
        result = notifier.notify(
            args.path, args.name, version=args.version, training_step=args.step,
            metadata=metadata, sha256=args.sha256, force=args.force,
            upload_to=args.upload_to, transport=args.via, nodes=_nodes(args.nodes),
            wait_for=args.wait, timeout=args.timeout,
        )  # fmt: skip
    if absent:
        print(
            f"fks notify: {args.path} does not exist on this machine; it may still exist on "
            "the serving nodes, which look for it on their own disks"
            + ("" if result.sent else " (and nothing was announced)"),
            file=sys.stderr,
        )
    if result.unknown_nodes:
        print(
            f"fks notify: warning: no live node has the id(s) {', '.join(result.unknown_nodes)}",
            file=sys.stderr,
        )
    if result.outcome == "unknown":
        print(
            f"fks notify: sent but not confirmed ({result.reason}): Redis may still publish "
            "it; check with `fks status`",
            file=sys.stderr,
        )
        return 3
    if not result.sent:
        print(f"fks notify: not sent ({result.outcome}): {result.reason}", file=sys.stderr)
        return 1
    assert result.notification is not None
    print(json.dumps(result.notification.wire_dict()))
    if result.notification.nodes is not None:
        where = "; targeted: :latest does not move"
    else:
        where = "" if result.latest_updated else "; :latest keeps a newer version"
    print(
        f"published version {result.notification.version} to {result.receivers} subscriber(s)"
        + where,
        file=sys.stderr,
    )
    report = result.acks
    if report is None:
        return 0
    print("\n".join(format_acks(report)))
    summary = (
        f"{len(report.applied)} applied, {len(report.rejected)} rejected, "
        f"{len(report.silent)} silent, in {report.seconds * 1e3:.0f} ms"
    )
    print(summary, file=sys.stderr)
    return 0 if report.ok else 1


def _nodes(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    return [n.strip() for v in values for n in v.split(",") if n.strip()]


def _wait(value: str) -> int | str:
    if value == "all":
        return "all"
    try:
        count = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'all' or a count, got {value!r}") from None
    if count < 1:
        raise argparse.ArgumentTypeError(f"expected 'all' or a count >= 1, got {value!r}")
    return count


def cmd_rollout(args: argparse.Namespace) -> int:
    from publisher import CheckpointNotifier
    from publisher.rollout import RolloutPlan, run_rollout

    metadata = _metadata(args.meta, "rollout")
    if metadata is None:
        return 2
    try:
        plan = RolloutPlan(
            canary=args.canary, soak=args.soak, max_error_rate=args.max_error_rate,
            timeout=args.timeout, allow_idle=args.allow_idle,
        )  # fmt: skip
    except ValueError as exc:
        print(f"fks rollout: refused: {exc}", file=sys.stderr)
        return 1
    with CheckpointNotifier(settings=_settings(args)) as notifier:
        result = run_rollout(
            notifier, args.path, plan, say=lambda line: print(line, flush=True),
            notify_args={
                "model_name": args.name, "version": args.version, "training_step": args.step,
                "metadata": metadata, "sha256": args.sha256, "force": args.force,
                "upload_to": args.upload_to, "transport": args.via,
            },
        )  # fmt: skip
    if result.outcome == "promoted":
        ok = result.promotion is not None and result.promotion.acks is not None
        return 0 if ok and result.promotion.acks.ok else 1  # type: ignore[union-attr]
    print(f"fks rollout: {result.outcome}: {result.reason}", file=sys.stderr)
    return {"rolled_back": 2, "rollback_failed": 3}.get(result.outcome, 1)


def cmd_status(args: argparse.Namespace) -> int:
    from common.redis_io.connect import REDIS_ERRORS, LazyRedis, Timeouts
    from common.settings import keys_for
    from fks.status import StatusReport, format_status, gather_status

    settings = _settings(args)
    lazy = LazyRedis(settings.redis_url, Timeouts(2.0, 2.0))

    def gather() -> list[StatusReport]:  # each instance named (SPEC §13), in order
        return [
            gather_status(
                lazy.get(), iid, keys_for(iid, settings.redis_url), secret=settings.secret
            )
            for iid in settings.instances
        ]

    if args.watch:
        from fks.status import watch_status

        try:
            watch_status(gather, interval=args.interval, count=args.count)
        finally:
            lazy.close()
        return 0
    try:
        reports = gather()
    except REDIS_ERRORS as exc:
        print(f"fks status: Redis at {redact_url(settings.redis_url)}: {exc}", file=sys.stderr)
        return 1
    finally:
        lazy.close()
    if args.json:
        dicts = [report.to_dict() for report in reports]
        print(json.dumps(dicts[0] if len(dicts) == 1 else {"instances": dicts}, indent=2))
    else:
        print("\n\n".join(format_status(report) for report in reports))
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from common.checkpoint import CheckpointLimits
    from common.checkpoint.convert import convert_checkpoint, default_destination
    from common.errors import CheckpointError

    destination = Path(args.dst) if args.dst else default_destination(args.src)
    if destination.suffix != ".safetensors":
        print(f"fks convert: {destination}: DST must end in .safetensors", file=sys.stderr)
        return 2
    same = destination.absolute() == Path(args.src).absolute()  # refused below: not a .pt
    if destination.exists() and not args.force and not same:
        print(f"fks convert: {destination} exists (--force replaces it)", file=sys.stderr)
        return 2
    try:
        converted = convert_checkpoint(
            args.src, destination, limits=CheckpointLimits.from_settings(_settings(args))
        )
    except CheckpointError as exc:
        print(f"fks convert: {exc} ({exc.reason})", file=sys.stderr)
        return 2
    source, saved = converted.source, converted.saved
    print(f"{source.sha256}  {source.path}")  # sha256sum's format: `sha256sum -c` checks both
    print(f"{saved.sha256}  {saved.path}")
    print(
        f"converted version {source.version} (step {source.training_step}, "
        f"{len(source.state_dict)} tensors): {source.size} -> {saved.size} bytes",
        file=sys.stderr,
    )
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from fks.demo import DemoConfig, run_demo
    from fks.redis_server import RedisServerNotFound

    logging.basicConfig(level=logging.ERROR)
    if args.instances < 1:
        raise ValueError(f"--instances must be 1 or more, not {args.instances}")
    shared = {"redis_url": args.redis_url, "algo": args.algo, "instances": args.instances}
    if args.short:
        config = DemoConfig(steps=600, every=150, warmup=200, **shared)
    else:
        config = DemoConfig(steps=args.steps, every=args.every, **shared)
    try:
        return run_demo(config)
    except RedisServerNotFound:
        print(
            "fks demo: no Redis answers and no redis-server to start: "
            "pip install 'fks-checkpoint-notify[demo]' (or give --redis-url)",
            file=sys.stderr,
        )
        return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fks",
        description="Push-driven hot reload of PyTorch checkpoints over Redis pub/sub.",
        epilog="Environment: REDIS_URL, FKS_INSTANCE_ID, STAT_PAIR_RL_MODEL, STAT_PAIR_RL_DIR, "
        "STAT_PAIR_RL_JIT, FKS_API_KEY, FKS_NOTIFY_SECRET, ENABLE_CHECKPOINT_NOTIFY.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(p: argparse.ArgumentParser, *, several: bool = False) -> None:
        if several:  # SPEC §13: fks serve and fks status take several
            p.set_defaults(several=True)
            p.add_argument("--instance", action="append", metavar="ID",
                           help="instance id, repeatable: one model each (default: "
                           "$FKS_INSTANCE_IDS, else $FKS_INSTANCE_ID, else 'default')")  # fmt: skip
        else:
            p.add_argument("--instance",
                           help="instance id (default: $FKS_INSTANCE_ID or 'default')")  # fmt: skip
        p.add_argument("--redis-url", help="Redis URL (default: $REDIS_URL)")

    def trainer(p: argparse.ArgumentParser, steps: int, every: int) -> None:
        """What the demo trainer trains, and for how long (fks train, fks demo)."""
        p.add_argument("--steps", type=int, default=steps, help=f"environment steps ({steps})")
        p.add_argument("--every", type=int, default=every, help=f"checkpoint interval ({every})")
        p.add_argument("--algo", choices=["sac", "dqn"], default="sac",
                       help="sac: the continuous sac_actor (default); "
                       "dqn: a dqn Q-network over short/flat/long")  # fmt: skip

    serve = sub.add_parser("serve", help="run the server (uvicorn)", description=(
        "Run the FastAPI server: /sac/* and /metrics, hot-reloading checkpoints announced on "
        "Redis, falling back to an os.stat per request while Redis is away."))  # fmt: skip
    serve.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    serve.add_argument("--access-log", action="store_true", help="log every request")
    serve.add_argument("--workers", type=int, default=1,
                       help="worker processes, each its own node <id>-w<slot> (1)")  # fmt: skip
    serve.add_argument("--loop", choices=["auto", "uvloop", "asyncio"], default="auto",
                       help="event loop (auto: uvloop where installed)")  # fmt: skip
    serve.add_argument("--http", choices=["auto", "httptools", "h11"], default="auto",
                       help="HTTP parser (auto: httptools where installed)")  # fmt: skip
    common(serve, several=True)
    serve.set_defaults(func=cmd_serve)

    train = sub.add_parser("train", help="the demo trainer", description=(
        "Train SAC on a simulated pair spread; every N steps save a checkpoint atomically "
        "and announce it with its metrics."))  # fmt: skip
    trainer(train, steps=5000, every=500)
    train.add_argument("--dir", default="cache/models/rl/stat_pair", help="checkpoint directory")
    train.add_argument("--keep", type=int, default=5, help="checkpoints kept on disk (5)")
    train.add_argument("--warmup", type=int, default=500, help="random steps first (500)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--threads", type=int, default=1,
                       help="torch threads (1: leave the other cores to the servers)")  # fmt: skip
    train.add_argument("--format", choices=["safetensors", "pt"], default="safetensors",
                       help="checkpoint format (safetensors; pt: the first release's)")  # fmt: skip
    train.add_argument("--quiet", action="store_true", help="no progress bar or logs")
    common(train)
    train.set_defaults(func=cmd_train)

    def announce(p: argparse.ArgumentParser) -> None:
        p.add_argument("path", help="checkpoint path (sent absolute)")
        p.add_argument("--name", default="", help="model name")
        p.add_argument("--version", type=int, help="version (default: next from INCR)")
        p.add_argument("--step", type=int, default=0, help="training step")
        p.add_argument("--meta", action="append", default=[], metavar="KEY=VALUE",
                       help="metadata entry (repeatable)")  # fmt: skip
        p.add_argument("--sha256", help="file hash (default: computed if the file is here)")
        p.add_argument("--force", action="store_true", help="apply even if not newer")
        p.add_argument("--upload-to", metavar="URL",
                       help="upload the file under this prefix (s3://bucket/prefix/) and "
                       "announce its URL (default: $FKS_UPLOAD_TO)")  # fmt: skip
        p.add_argument("--via", choices=["path", "redis"], default="path",
                       help="redis: store the bytes in Redis and announce redis-blob:<sha256> "
                       "(files up to FKS_BLOB_MAX_BYTES)")  # fmt: skip
        p.add_argument("--timeout", type=float, default=10.0,
                       help="seconds to wait for the nodes' acks (10)")  # fmt: skip
        common(p)

    notify = sub.add_parser("notify", help="publish one notification", description=(
        "Announce a checkpoint, as notify_checkpoint() does. Prints the JSON sent; exits 1 "
        "with the reason if nothing was sent (Redis unreachable, or the version already names "
        "another checkpoint), 3 if it was sent but Redis did not confirm it. With --wait, "
        "prints each node's ack and exits 1 if any node rejected it or stayed silent."
    ))  # fmt: skip
    announce(notify)
    notify.add_argument("--wait", type=_wait, metavar="all|N",
                        help="wait for the acks of every live node, or of N nodes")  # fmt: skip
    notify.add_argument("--nodes", action="append", metavar="ID[,ID...]",
                        help="only these nodes consider it (:latest does not move)")  # fmt: skip
    notify.set_defaults(func=cmd_notify)

    rollout = sub.add_parser("rollout", help="canaries first, then every node", description=(
        "Send the checkpoint to K live nodes first, watch their acks and request errors for "
        "the soak time, then promote it to every node (moving :latest) or force the canaries "
        "back to the fleet's decision in :latest. Prints every step; exits 0 when promoted "
        "and every node answered, 2 when it rolled back (every canary acked the rollback), "
        "3 when a canary did not confirm the rollback (it may still serve the new "
        "checkpoint), 1 otherwise (nothing sent, a silent node)."
    ))  # fmt: skip
    announce(rollout)
    rollout.add_argument("--canary", type=int, default=1, help="canary nodes (1)")
    rollout.add_argument("--soak", type=float, default=30.0,
                         help="seconds to watch the canaries (30)")  # fmt: skip
    rollout.add_argument(
        "--max-error-rate", type=float, default=0.01,
        help="largest canary request error rate that still promotes (0.01)",
    )  # fmt: skip
    rollout.add_argument(
        "--allow-idle", action="store_true",
        help="promote even if no request reached a canary during the soak (no evidence)",
    )  # fmt: skip
    rollout.set_defaults(func=cmd_rollout)

    status = sub.add_parser("status", help="latest notification, listeners, nodes",
                            description="What Redis knows of an instance (of each, with "
                            "--instance repeated or FKS_INSTANCE_IDS): the :latest "
                            "notification, subscribers listening, every serving node and the "
                            "instances it serves.")  # fmt: skip
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument("--watch", action="store_true", help="redraw the table in place")
    status.add_argument("--interval", type=float, default=1.0,
                        help="seconds between redraws with --watch (1)")  # fmt: skip
    status.add_argument("--count", type=int, help=argparse.SUPPRESS)  # tests: stop after N
    common(status, several=True)
    status.set_defaults(func=cmd_status)

    convert = sub.add_parser("convert", help="rewrite a .pt checkpoint as .safetensors",
                             description=(
        "Read SRC as a serving node would (every bound, finite weights) and write the same "
        "weights and metadata to DST (default: SRC with the suffix .safetensors) atomically, "
        "then read it back and compare. Prints both sha256s as `sha256sum` does; exits 2 for "
        "a missing or bad SRC, or a DST that is not .safetensors or exists."))  # fmt: skip
    convert.add_argument("src", help="the .pt checkpoint")
    convert.add_argument("dst", nargs="?", help="the .safetensors to write")
    convert.add_argument("--force", action="store_true", help="replace an existing DST")
    convert.set_defaults(func=cmd_convert)

    demo = sub.add_parser("demo", help="the main job on one machine", description=(
        "Embedded Redis + server + trainer + a predicting client; prints each swap and a "
        "summary; exits 0 when no request failed and the newest is served."))  # fmt: skip
    trainer(demo, steps=3000, every=300)
    demo.add_argument("--short", action="store_true", help="a quick run (600 steps)")
    demo.add_argument("--redis-url", help="use this Redis instead of an embedded one")
    demo.add_argument("--instances", type=int, default=1, metavar="N",
                      help="models on the one server, each with its own trainer, swapping "
                      "independently (1)")  # fmt: skip
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ValueError as exc:  # bad instance id, bad settings: a clear message, no traceback
        print(f"fks {args.command}: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _one_line(exc: ValueError) -> str:
    """A settings error as one line: each of pydantic's errors as ``field: message``."""
    from pydantic import ValidationError

    if not isinstance(exc, ValidationError):
        return str(exc)
    return "; ".join(
        f"{'.'.join(str(part) for part in error['loc']) or 'settings'}: "
        f"{error['msg'].removeprefix('Value error, ')}"
        for error in exc.errors()
    )


if __name__ == "__main__":
    sys.exit(main())
