"""``python -m bench`` (``make bench``): every benchmark, tables on stdout, docs/BENCHMARKS.md.

``--quick`` runs each one small, as the CI smoke test does (no timing is asserted there).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from bench import (  # noqa: E402
    architectures,
    burst,
    fanout,
    freshness_cost,
    http,
    inference,
    instances,
    node_cpu,
    oip,
    rollout,
    storm,
    swap_latency,
    swap_memory,
)
from bench._util import table  # noqa: E402
from bench.narrative import node_cpu_text, storm_text, swap_floor_text  # noqa: E402
from fks.redis_server import find_redis_server  # noqa: E402


@dataclass
class Section:
    title: str
    command: str
    body: list[str] = field(default_factory=list)
    verdicts: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        parts = [f"## {self.title}", "", f"Reproduce: `{self.command}`", "", *self.body]
        if self.verdicts:
            parts += ["", *[f"- {v}" for v in self.verdicts]]
        return "\n".join(parts) + "\n"


def num(value: object) -> float:
    """A table cell that holds a number, as a float (the rows are ``list[object]``)."""
    if not isinstance(value, int | float):
        raise TypeError(f"expected a number, got {value!r}")
    return float(value)


def verdict(ok: bool, text: str) -> str:
    return f"{'met' if ok else '**not met**'}: {text}"


def _plot(
    path: Path, title: str, labels: list[str], series: dict[str, list[float]], unit: str
) -> str:
    fig, ax = plt.subplots(figsize=(7, 3.2))
    width = 0.8 / max(1, len(series))
    for i, (name, values) in enumerate(series.items()):
        ax.bar([x + i * width for x in range(len(labels))], values, width, label=name)
    ax.set_xticks([x + width * (len(series) - 1) / 2 for x in range(len(labels))], labels)
    ax.set_ylabel(unit)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"![{title}](bench/{path.name})"


def run(quick: bool, plots: Path, skip: frozenset[str] = frozenset()) -> list[Section]:
    """Every section but those whose number is in ``skip`` (e.g. ``{"3", "4"}``)."""
    plots.mkdir(parents=True, exist_ok=True)
    sections = []

    if "1" not in skip:
        s = Section("1. notify → swap", "python -m bench.swap_latency --n 200")
        lat = swap_latency.run(20 if quick else 200)
        response = http.notify_to_response(10 if quick else 200)
        rows = [[name, *r.values()] for name, r in lat.items()]
        rows.append(["publish → first HTTP response from it (300 KB, default)", *response.values()])
        s.body += [table(["ms", "p50", "p90", "p99", "mean"], rows), ""]
        ours = {k: v for k, v in lat.items() if k.startswith("notify → swapped")}
        s.body.append(
            _plot(
                plots / "notify_swap.png",
                "notify → swapped, and its floors",
                [k.replace("notify → swapped, ", "").replace(" (floor)", "") for k in lat],
                {"p50": [r["p50"] for r in lat.values()], "p99": [r["p99"] for r in lat.values()]},
                "ms",
            )
        )
        for name, r in ours.items():
            size = "300 KB" if "300 KB" in name else "4 MB"
            floor = lat[f"sum: delivered + load {size} (floor)"]["p50"]
            if size == "300 KB":
                ok = r["p50"] <= 1.5 and r["p99"] <= 3.0
                text = f"{name}: p50 {r['p50']:.2f} ms ≤ 1.5, p99 {r['p99']:.2f} ms ≤ 3"
            else:
                ok, text = r["p50"] <= 5.0, f"{name}: p50 {r['p50']:.2f} ms ≤ 5"
            text += f" (floor measured beside it: delivery + paced load = {floor:.2f} ms p50)"
            s.verdicts.append(verdict(ok, text))
        s.body += ["", *swap_floor_text(lat)]
        sections.append(s)

    if "1b" not in skip:
        s = Section("1b. Node CPU per publication", "python -m bench.node_cpu --publications 200")
        cpu = node_cpu.run(20 if quick else 200, rate=20.0)
        s.body += [
            "A node in its own process, no requests, hears notices at 20/s from a trainer's "
            "`CheckpointNotifier`; its CPU is read inside it (`time.process_time()`, each thread's "
            "own clock, the stages that share a thread timed around the node's methods) and an "
            "idle stretch of the same length is taken out (shown apart). µs per publication:",
            "",
            table(node_cpu.HEADERS, node_cpu.rows(cpu)),
            "",
            *node_cpu_text(cpu),
        ]
        s.verdicts += [verdict(ok, text) for ok, text in node_cpu.verdicts(cpu)]
        sections.append(s)

    if "2" not in skip:
        s = Section("2. Freshness cost on the request path", "python -m bench.freshness_cost")
        fresh = freshness_cost.run(20_000 if quick else 200_000)
        stat = fresh["one os.stat (reference)"]
        s.body.append(
            table(
                ["request path", "ns/request", "x cheaper than os.stat"],
                [[k, v, stat / v] for k, v in fresh.items()],
            )
        )
        redis_ns = fresh["Redis mode (ours)"]
        s.verdicts.append(verdict(redis_ns <= 500, f"Redis mode {redis_ns:.0f} ns ≤ 500 ns"))
        sections.append(s)

    if "3" not in skip:
        s = Section("3. Swap-storm tail: ours vs seed 000's design", "python -m bench.storm")
        st = storm.run(0.5 if quick else 3.0, rate=20.0, rounds=1 if quick else 5)
        s.body += [
            f"Load: {http.generator()}, 16 connections, one uvicorn worker per server; a trainer "
            "saves 20 checkpoints/s (ours: and announces each). "
            + ("One round." if quick else "Medians of 5 rounds alternating the servers; each "
               "ratio is the median of the rounds' own ratios."),
            "",
            table(storm.HEADERS, st.rows),
            "",
            table(
                ["ratio (median of the rounds')", "value", "target"],
                [
                    ["ours storm p99 / seed tier 1 storm p99",
                     st.ratio(storm.OURS, storm.SEED1), "≤ 0.85"],
                    ["ours JIT storm p99 / seed tier 1 JIT storm p99",
                     st.ratio(storm.OURS_JIT, storm.SEED1_JIT), "≤ 0.85"],
                    ["control (no load) storm p99 / seed tier 1 storm p99",
                     st.ratio(storm.CONTROL, storm.SEED1), "the floor of the first"],
                    ["ours storm p99 / seed tier 2 storm p99",
                     st.ratio(storm.OURS, storm.SEED2), ""],
                ],
            ),
            "",
            _plot(
                plots / "swap_storm.png",
                "predict p99 quiet vs a trainer saving 20/s",
                [str(r[0]).replace("seed design, ", "seed ").split(" (")[0] for r in st.rows],
                {"quiet p99": [num(r[2]) for r in st.rows],
                 "storm p99": [num(r[4]) for r in st.rows]},
                "ms",
            ),
            "",
            *storm_text(st),
        ]  # fmt: skip
        control_quiet = st.ratio(storm.CONTROL, storm.CONTROL, quiet=True)
        control_seed = st.ratio(storm.CONTROL, storm.SEED1)
        for name in (storm.OURS, storm.OURS_JIT):
            ratio = st.ratio(name, name, quiet=True)
            s.verdicts.append(
                verdict(
                    ratio <= 1.1,
                    f"{name}: storm p99 / quiet p99 = {ratio:.2f} ≤ 1.1 (floor measured beside "
                    f"it, the control that loads nothing: {control_quiet:.2f})",
                )
            )
        for ours_name, seed_name in ((storm.OURS, storm.SEED1), (storm.OURS_JIT, storm.SEED1_JIT)):
            ratio = st.ratio(ours_name, seed_name)
            s.verdicts.append(
                verdict(
                    ratio <= 0.85,
                    f"{ours_name} storm p99 / {seed_name} storm p99 = {ratio:.2f} ≤ 0.85 (floor "
                    f"measured beside it, the control that loads nothing: {control_seed:.2f})",
                )
            )
        sections.append(s)

    if "4" not in skip:
        s = Section(
            "4. Throughput", "python -c 'from bench.http import throughput; print(throughput())'"
        )
        rows4 = http.throughput(0.5 if quick else 3.0, rounds=1 if quick else 3)
        s.body += [
            f"Load: {http.generator()}, 16 connections (batches: 4), medians of the rounds. The "
            f"API key is on (`FKS_API_KEY`, sent as `X-API-Key` to every route) and so are the "
            "metrics. Each server stack runs its own uvicorn worker; the rounds alternate them.",
            "",
        ]
        s.body.append(
            table(
                [
                    "route",
                    "server stack",
                    "req/s (rows/s)",
                    "p50 ms",
                    "p99 ms",
                    "x bare req/s",
                    "x bare p99",
                    "server CPU µs/req",
                    "x bare CPU",
                ],
                rows4,
            )  # fmt: skip
        )
        by_key = {(str(r[0]), str(r[1])): r for r in rows4}
        for stack_name in http.STACKS:
            route = by_key[(http.OURS_ROUTE, stack_name)]
            s.verdicts.append(
                verdict(
                    num(route[5]) >= 0.97 and num(route[6]) <= 1.05,
                    f"{stack_name}: /sac/predict at {num(route[5]):.2f}x the bare endpoint's req/s "
                    f"≥ 0.97x, p99 {num(route[6]):.2f}x ≤ 1.05x (server CPU per request "
                    f"{num(route[8]):.2f}x the bare endpoint's)",
                )
            )
        fast = by_key[(http.OURS_ROUTE, http.DEFAULT_STACK)]
        plain = by_key[(http.OURS_ROUTE, "asyncio + h11")]
        s.body += [
            "",
            f"`fks serve`'s default stack (uvloop + httptools) serves /sac/predict at "
            f"{num(fast[2]) / num(plain[2]):.2f}x the req/s of the plain one (asyncio + h11), "
            f"p99 {num(fast[4]):.2f} ms against {num(plain[4]):.2f} ms, in this run.",
        ]
        sections.append(s)

    if "5" not in skip:
        s = Section("5. Fan-out", "python -m bench.fanout --nodes 1 8 32")
        runs = [(2, False)] if quick else [(1, False), (8, False), (32, False), (32, True)]
        fan = {(n, jit): fanout.run(n, 5 if quick else 30, jit=jit) for n, jit in runs}
        cores = len(os.sched_getaffinity(0))
        s.body.append(
            table(
                [
                    "serving processes",
                    "last swapped p50 ms",
                    "p99 ms",
                    "first publication ms",
                    "CPU ms per node",
                    "CPU floor ms",
                    "publications",
                ],
                [
                    [
                        f"{n}{' JIT' if jit else ''}",
                        r["p50"],
                        r["p99"],
                        r["first"],
                        r["cpu_ms"],
                        n * r["cpu_ms"] / cores,
                        int(r["complete"]),
                    ]
                    for (n, jit), r in fan.items()
                ],
            )  # fmt: skip
        )
        last = fan[runs[-1]]
        s.body += [
            "",
            "Every process receives, verifies and loads the checkpoint itself "
            f"(~{last['cpu_ms']:.1f} "
            "ms of CPU per publication, measured in each node with `time.process_time()`: the "
            "message, the load, the swap, and the node's idle pings and heartbeats in between), "
            f"so on {cores} cores the last of N processes cannot swap before N × that ÷ cores (the "
            "CPU floor column); Redis delivers the message to all of them in well under a "
            "millisecond. The first publication is every process's first load (first-time costs "
            "of a fresh process) and is shown apart; p50/p99 are over the publications after it. "
            "Each node freezes its startup objects out of the collector's full passes, as a "
            "server does (`subscriber/runtime/heap.py`): "
            "before that, one full pass of ~135 ms in a young "
            "process landed on its second swap and set the p99.",
            "",
            _plot(
                plots / "fanout.png",
                "one publish → N processes, last one swapped",
                [f"{n}{' JIT' if jit else ''}" for n, jit in fan],
                {"p50": [r["p50"] for r in fan.values()], "p99": [r["p99"] for r in fan.values()]},
                "ms",
            ),
        ]
        if not quick:
            for key in ((32, False), (32, True)):
                name = f"32 nodes{' JIT' if key[1] else ''}"
                p99, floor = fan[key]["p99"], 32 * fan[key]["cpu_ms"] / cores
                s.verdicts.append(
                    verdict(
                        p99 <= 50,
                        f"{name} p99 {p99:.1f} ms ≤ 50 ms (CPU floor measured beside it: 32 × "
                        f"{fan[key]['cpu_ms']:.1f} ms per node ÷ {cores} cores = {floor:.0f} ms)",
                    )
                )
        sections.append(s)

    if "6" not in skip:
        s = Section("6. Burst", "python -m bench.burst")
        b = burst.run(200 if quick else 1000, 0.2 if quick else 1.0)
        s.body.append(table(["burst", "value"], [[k, v] for k, v in b.items()]))
        s.verdicts.append(
            verdict(
                b["loads"] <= 10 and b["final version"] == b["notifications"],
                f"{b['loads']:.0f} loads ≤ 10, final version the newest",
            )
        )
        sections.append(s)

    if "7" not in skip:
        s = Section(
            "7. Inference and memory", "python -m bench.inference; python -m bench.swap_memory"
        )
        inf = inference.latency(200 if quick else 3000)
        s.body.append(table(["runner", "batch-1 µs", "x eager", "max |Δ| vs eager"], inf))
        s.body += [
            "",
            _plot(
                plots / "inference.png",
                "batch-1 policy latency",
                [str(r[0]).split(" (")[0] for r in inf],
                {"µs": [num(r[1]) for r in inf]},
                "µs",
            ),
        ]
        best = max(num(r[2]) for r in inf[1:])
        equal = all(num(r[3]) <= 1e-5 for r in inf)
        s.verdicts.append(
            verdict(
                best >= 3 and equal,
                f"best compiled path {best:.1f}x eager ≥ 3x, "
                f"outputs within 1e-5: {'yes' if equal else 'no'}",
            )
        )
        s.body += ["", table(["RSS around one swap (4 MB policy)", "MB"], inference.swap_rss())]
        mem = swap_memory.run(60 if quick else 1000)
        s.body += ["", table(["RSS over swaps", "value"], [[k, v] for k, v in mem.items()])]
        s.verdicts.append(
            verdict(
                mem["growth (MB)"] <= mem["budget: served + previous (MB)"],
                f"RSS growth {mem['growth (MB)']:.2f} MB over {mem['swaps']:.0f} "
                f"swaps ≤ served + previous",
            )
        )
        sections.append(s)

    if "8" not in skip:
        command, body, checks = architectures.section(quick)
        s = Section("8. Architectures", command, body)
        s.verdicts += [verdict(ok, text) for ok, text in checks]
        sections.append(s)

    if "9" not in skip:
        s = Section("9. Rollouts: waiting for every node's ack", "python -m bench.rollout")
        waits = {n: rollout.run(n, 2 if quick else 30) for n in ([1] if quick else [1, 8, 32])}
        s.body.append(table(rollout.HEADERS, [rollout.row(n, r) for n, r in waits.items()]))
        s.body += [
            "",
            "Publications alternate in one run: plain ones (notify → the last node swapped, as "
            'in section 5) and ones with `wait_for="all"` (the call, from subscribing to the acks '
            "to returning with every node's ack). The acks ride on the same Redis; a node acks "
            "right after its swap, having rewritten its registry entry.",
        ]
        most = max(waits)
        s.verdicts.append(
            verdict(
                waits[most]["waited"]["p99"] <= 1000,
                f'{most} nodes: wait_for="all" p99 {waits[most]["waited"]["p99"]:.1f} ms ≤ 1 s '
                "(a trainer knows within a second who serves its checkpoint)",
            )
        )
        sections.append(s)

    if "10" not in skip:
        s = Section(
            "10. Open Inference Protocol: /v2 infer beside /sac/predict", "python -m bench.oip"
        )
        s.body.append(table(oip.HEADERS_OUT, oip.run(0.3 if quick else 2.0, 1 if quick else 3)))
        s.body += [
            "",
            "One uvicorn worker (`fks serve`'s stack), the API key on, Redis mode; one "
            "closed-loop client at a time, the cases alternating over the rounds (medians). "
            "`/sac/predict` is answered in front of FastAPI (`subscriber/web/hotpath.py`), `/v2` "
            "by its FastAPI route. Binary tensors spare the JSON of 256 rows both ways. Every "
            "answer is checked against `/sac`'s first: the same float32 actions.",
        ]
        sections.append(s)

    if "11" not in skip:
        s = Section("11. Several models per node (SPEC §13)", "python -m bench.instances")
        rows11 = instances.run(quick)
        s.body.append(table(instances.HEADERS, rows11))
        s.body += [
            "",
            "One `fks serve` (one uvicorn worker) on a redis-server serves N instances `m0`…, "
            "each its own 300 KB default actor in its own root. RSS is the server process' "
            "`VmRSS` once every model is served and again after every swap below; the extra "
            "model's share is (RSS(N) − RSS(1)) ÷ (N − 1) from the latter. notify → swapped "
            "is timed here from just before `notify()` on `m0` (every 100 ms) to the arrival of "
            "the node's `applied` ack on `fks:m0:acks` (sent right after the swap); \"in the "
            "node\" is that ack's own `ms`, the message's arrival to the swap. With the others "
            "busy, a publisher process announces new checkpoints to each of the N − 1 others "
            "at 20/s, evenly spread; the rate it achieved, the others' swaps the node counted "
            "(`fks_swaps_total`) and the server's CPU (100 % is one core) are shown. The idle "
            "and busy phases alternate in rounds of the same run.",
            *[f"\n{note}" for note in instances.notes(rows11)],
        ]
        sections.append(s)

    return sections


def header(quick: bool) -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    server = find_redis_server()
    version = subprocess.run([str(server), "--version"], capture_output=True, text=True).stdout
    return "\n".join(
        [
            "# Benchmarks",
            "",
            "Written by `make bench` (`python -m bench`); every figure below is from that one run.",
            "Machines here are shared and noisy: each comparison is measured in the same run,",
            "alternating its sides, and the verdicts compare ratios or same-run floors.",
            "",
            f"- when: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC"
            + (" (quick mode: small sizes, not for reading)" if quick else ""),
            f"- machine: {platform.machine()}, {cpu}, {len(os.sched_getaffinity(0))} cores",
            f"- Python {platform.python_version()}, torch {torch.__version__}, "
            f"{version.split(' sha=')[0].strip()}, load generator: {http.generator()}",
            f"- load average when it started: {os.getloadavg()[0]:.1f} (other processes share "
            "these cores)",
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (the CI smoke test)")
    parser.add_argument("--out", type=Path, default=Path("docs/BENCHMARKS.md"))
    parser.add_argument(
        "--skip", default="", help="sections not to run, by number: e.g. 1b,3,4 (none)"
    )
    args = parser.parse_args()
    head = header(args.quick)  # the load average before the benchmarks add theirs
    skip = frozenset(filter(None, args.skip.split(",")))
    sections = run(args.quick, args.out.parent / "bench", skip)
    targets = [f"- {s.title.split(' ', 1)[0]} {v}" for s in sections for v in s.verdicts]
    summary = "\n".join(["## Targets", "", *targets, ""])
    text = head + "\n" + summary + "\n" + "\n".join(s.markdown() for s in sections)
    args.out.write_text(text)
    print(text)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
