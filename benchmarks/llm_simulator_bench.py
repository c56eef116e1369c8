"""Benchmark of the ragperf LLM simulator: is it ever the bottleneck?

Starts the simulator as a subprocess on a free loopback port (constant latency, no concurrency
limit), then runs closed loops of N concurrent aiohttp clients, each sending ``--rounds`` chat
completions one after another with a realistic RAG prompt (~4.6 KB of context, a distinct
question per request so that no answer comes from the simulator's cache). Each level runs twice:

* ``burst``: all N clients start at the same instant, so every round is a synchronised burst of
  N requests (the worst case); the ideal throughput is N / latency.
* ``stagger``: client i starts i/N of the latency late, so requests arrive at the steady rate
  N / latency, as from independent users; the ideal counts that ramp-up.

For each level it reports the achieved throughput against the ideal and the latency added to
the configured one (p50/p95/max), timed from the moment the request is on the wire (aiohttp's
request-chunk-sent trace) to the end of the response body; ``sim+p95``, the simulator's share of
it, from its timing headers (waiting to be picked up + its time beyond the configured latency);
and the end-to-end p95 from the start of each request coroutine (on Python < 3.12 aiohttp's
client writes request bodies from a separately scheduled task, so a burst leaves the client only
after all N requests are prepared). Then the same for embeddings of batches of 32 texts at 50
concurrent clients, as floats and as base64. The simulator is stopped by its PID at the end.

Usage: ``python benchmarks/llm_simulator_bench.py [--levels 1,50,150,300] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import queue
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp

from ragperf_lab.llm_simulator import PROCESSING_HEADER, START_HEADER

log = logging.getLogger(__name__)

TOPICS = [
    "chỉ định thầu",
    "đấu thầu rộng rãi",
    "bảo đảm dự thầu",
    "hồ sơ mời thầu",
    "nhà thầu nước ngoài",
    "mua sắm trực tiếp",
    "chào hàng cạnh tranh",
    "hợp đồng trọn gói",
    "thẩm định giá gói thầu",
    "kế hoạch lựa chọn nhà thầu",
]
FILLER = [
    "việc thực hiện", "phải bảo đảm", "cạnh tranh", "công bằng", "minh bạch", "hiệu quả kinh tế",
    "trách nhiệm giải trình", "chủ đầu tư", "bên mời thầu", "tổ chức", "cá nhân có liên quan",
    "trong thời hạn", "theo quy định",
]  # fmt: skip


@dataclass
class LevelResult:
    """One measured level."""

    kind: str
    concurrency: int
    requests: int
    errors: int
    wall_s: float
    throughput_rps: float
    ideal_rps: float | None
    efficiency: float | None
    overhead_p50_ms: float
    overhead_p95_ms: float
    overhead_max_ms: float
    server_share_p95_ms: float
    e2e_overhead_p95_ms: float
    server_cpu_pct: float
    client_cpu_pct: float


def _chunk(rng: random.Random, index: int) -> str:
    topic = TOPICS[index % len(TOPICS)]
    lines = [f"[{index % 5 + 1}] Luật Đấu thầu số 22/2023/QH15", f"Điều {20 + index % 60}. Quy định về {topic}"]
    for k in range(1, 5):
        words = " ".join(rng.choice(FILLER) for _ in range(14))
        lines.append(f"{k}. {topic.capitalize()} {words}.")
    return "\n".join(lines)


def chat_payload(n: int) -> bytes:
    """The n-th RAG-style chat request: five retrieved chunks and a distinct question."""
    rng = random.Random(n)
    context = "\n\n".join(_chunk(rng, n + j) for j in range(5))
    body = {
        "model": "ragperf-sim-chat",
        "temperature": 0,
        "max_tokens": 512,
        "messages": [
            {"role": "system", "content": "Bạn là trợ lý pháp lý về đấu thầu. Chỉ dựa vào ngữ cảnh:\n" + context},
            {"role": "user", "content": f"Quy định về {TOPICS[n % len(TOPICS)]} như thế nào? (câu số {n})"},
        ],
    }
    return json.dumps(body, ensure_ascii=False).encode("utf-8")


def embed_payload(n: int, batch: int, encoding_format: str) -> bytes:
    """The n-th embeddings request: ``batch`` distinct chunk-sized texts (~1 KB each)."""
    rng = random.Random(10_000 + n)
    texts = [_chunk(rng, n * batch + i)[:1000] for i in range(batch)]
    body = {"model": "ragperf-sim-embedding", "input": texts, "encoding_format": encoding_format}
    return json.dumps(body, ensure_ascii=False).encode("utf-8")


# ------------------------------------------------------------------------------------------
# The simulator process


def start_simulator(latency: float, log_path: Path, timeout: float = 30.0) -> tuple[subprocess.Popen[str], str]:
    """Start the simulator on a free loopback port; returns the process and its base URL."""
    argv = [sys.executable, "-m", "ragperf_lab.llm_simulator", "--host", "127.0.0.1", "--port", "0"]
    argv += ["--latency", "constant", "--latency-median", str(latency), "--concurrency-limit", "0"]
    argv += ["--log-level", "WARNING"]
    env = {k: v for k, v in os.environ.items() if k != "RAGPERF_LLM_API_KEY"}
    with log_path.open("w") as stderr:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env)
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    stdout = proc.stdout
    threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True).start()
    try:
        line = lines.get(timeout=timeout)
    except queue.Empty:
        line = ""
    if "listening on http://" not in line:
        stop_simulator(proc)
        raise RuntimeError(f"the simulator did not start; see {log_path}")
    return proc, line.split()[-1]


def stop_simulator(proc: subprocess.Popen[str]) -> int | None:
    """SIGTERM the simulator by its PID, SIGKILL it if it has not exited 10 s later."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    return proc.returncode


def cpu_seconds(pid: int) -> float:
    """User+system CPU seconds of ``pid`` and its live children (the embedding workers)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        pids += [int(child) for child in task.read_text().split()]
    for one in pids:
        try:
            stat = Path(f"/proc/{one}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


# ------------------------------------------------------------------------------------------
# Load


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _open_connections(session: aiohttp.ClientSession, base: str, n: int) -> None:
    async def one() -> None:
        async with session.get(f"{base}/health") as response:
            await response.read()

    await asyncio.gather(*(one() for _ in range(n)))


async def run_level(
    session: aiohttp.ClientSession,
    base: str,
    pid: int,
    kind: str,
    concurrency: int,
    bodies: list[list[bytes]],
    configured_s: float,
    stagger: bool = False,
) -> LevelResult:
    """``concurrency`` clients, each sending its list of bodies one after another.

    All clients start at once (a burst), or with ``stagger`` client i starts ``i / N`` of the
    configured latency late, so that requests arrive at the steady rate ``N / latency``.
    """
    path = "/v1/chat/completions" if kind.startswith("chat") else "/v1/embeddings"
    url = f"{base}{path}"
    headers = {"Content-Type": "application/json"}
    latencies: list[float] = []  # from the request on the wire to the end of the response
    e2e: list[float] = []  # from the start of the request coroutine
    server_share: list[float] = []  # the part of the added latency spent in the simulator
    errors = 0

    async def client(own: list[bytes], offset: float) -> None:
        nonlocal errors
        if offset > 0:
            await asyncio.sleep(offset)  # the staggered start of this client
        for body in own:
            timing: dict[str, float] = {}
            started = time.monotonic()
            async with session.post(url, data=body, headers=headers, trace_request_ctx=timing) as response:
                await response.read()
                ok = response.status == 200
                server_start = float(response.headers.get(START_HEADER, "nan"))
                processing_s = float(response.headers.get(PROCESSING_HEADER, "nan")) / 1000
            ended = time.monotonic()
            sent = timing.get("sent", started)
            latencies.append(ended - sent)
            e2e.append(ended - started)
            # Waiting to be picked up by the simulator + its time beyond the configured latency.
            server_share.append(server_start - sent + processing_s - configured_s)
            errors += not ok

    await _open_connections(session, base, concurrency)
    cpu_server, cpu_client = cpu_seconds(pid), time.process_time()
    started = time.perf_counter()
    offsets = [i * configured_s / concurrency if stagger else 0.0 for i in range(concurrency)]
    await asyncio.gather(*(client(own, offset) for own, offset in zip(bodies, offsets, strict=True)))
    wall = time.perf_counter() - started
    cpu_server, cpu_client = cpu_seconds(pid) - cpu_server, time.process_time() - cpu_client
    overhead = [(latency - configured_s) * 1000 for latency in latencies]
    e2e_overhead = [(latency - configured_s) * 1000 for latency in e2e]
    throughput = len(latencies) / wall
    # The ideal wall time: every client's requests back to back at exactly the configured latency.
    ideal_wall = max(offset + len(own) * configured_s for own, offset in zip(bodies, offsets, strict=True))
    ideal = len(latencies) / ideal_wall if configured_s > 0 else None
    return LevelResult(
        kind=kind,
        concurrency=concurrency,
        requests=len(latencies),
        errors=errors,
        wall_s=round(wall, 3),
        throughput_rps=round(throughput, 1),
        ideal_rps=round(ideal, 1) if ideal else None,
        efficiency=round(throughput / ideal, 3) if ideal else None,
        overhead_p50_ms=round(statistics.median(overhead), 1),
        overhead_p95_ms=round(_percentile(overhead, 0.95), 1),
        overhead_max_ms=round(max(overhead), 1),
        server_share_p95_ms=round(_percentile([x * 1000 for x in server_share], 0.95), 1),
        e2e_overhead_p95_ms=round(_percentile(e2e_overhead, 0.95), 1),
        server_cpu_pct=round(100 * cpu_server / wall, 1),
        client_cpu_pct=round(100 * cpu_client / wall, 1),
    )


async def _on_chunk_sent(
    session: aiohttp.ClientSession, context: Any, params: aiohttp.TraceRequestChunkSentParams
) -> None:
    timing = context.trace_request_ctx
    if isinstance(timing, dict) and "sent" not in timing:
        timing["sent"] = time.monotonic()


async def run_all(args: argparse.Namespace, base: str, pid: int, deadline: float) -> dict[str, Any]:
    """Every level, within the deadline; returns the results and the simulator's counters."""
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
    timeout = aiohttp.ClientTimeout(total=30)
    tracing = aiohttp.TraceConfig()
    tracing.on_request_chunk_sent.append(_on_chunk_sent)
    results: list[LevelResult] = []
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, trace_configs=[tracing]) as session:
        async with session.post(f"{base}/v1/chat/completions", data=chat_payload(-1)) as response:
            response.raise_for_status()  # warm-up
        serial = 0
        for level in args.levels:
            for mode in ("burst", "stagger"):
                bodies = [
                    [chat_payload(serial + c * args.rounds + r) for r in range(args.rounds)] for c in range(level)
                ]
                serial += level * args.rounds
                remaining = deadline - time.monotonic()
                result = await asyncio.wait_for(
                    run_level(session, base, pid, f"chat-{mode}", level, bodies, args.latency, mode == "stagger"),
                    timeout=remaining,
                )
                results.append(result)
        for encoding_format in ("float", "base64"):
            kind = f"embed-{args.embed_batch}-{encoding_format}"
            bodies = [
                [embed_payload(c * args.rounds + r, args.embed_batch, encoding_format) for r in range(args.rounds)]
                for c in range(args.embed_concurrency)
            ]
            remaining = deadline - time.monotonic()
            result = await asyncio.wait_for(
                run_level(session, base, pid, kind, args.embed_concurrency, bodies, 0.0), timeout=remaining
            )
            results.append(result)
        async with session.get(f"{base}/stats") as response:
            stats = await response.json()
    return {"results": [asdict(r) for r in results], "simulator_stats": stats}


def print_table(results: list[dict[str, Any]], latency: float) -> None:
    """The results as a small text table."""
    header = (
        f"{'kind':<18}{'conc':>5}{'reqs':>6}{'err':>4}{'rps':>8}{'ideal':>8}{'eff':>7}"
        f"{'+p50ms':>8}{'+p95ms':>8}{'+maxms':>8}{'sim+p95':>8}{'e2e+p95':>8}{'simCPU%':>8}{'cliCPU%':>8}"
    )
    print(f"configured chat latency: constant {latency:.3f} s; embeddings: no simulated latency")
    print(
        "+p50/+p95/+max: latency added to the configured one, from the request on the wire to the end of\n"
        "the response; sim+p95: the simulator's share of it (waiting to be picked up + its time beyond the\n"
        "configured latency, from its timing headers); e2e+p95: from the start of the request coroutine"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        ideal = f"{r['ideal_rps']:.1f}" if r["ideal_rps"] else "-"
        eff = f"{r['efficiency']:.3f}" if r["efficiency"] else "-"
        print(
            f"{r['kind']:<18}{r['concurrency']:>5}{r['requests']:>6}{r['errors']:>4}{r['throughput_rps']:>8.1f}"
            f"{ideal:>8}{eff:>7}{r['overhead_p50_ms']:>8.1f}{r['overhead_p95_ms']:>8.1f}"
            f"{r['overhead_max_ms']:>8.1f}{r['server_share_p95_ms']:>8.1f}{r['e2e_overhead_p95_ms']:>8.1f}"
            f"{r['server_cpu_pct']:>8.1f}{r['client_cpu_pct']:>8.1f}"
        )


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns 0, or 1 if any request failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="1,50,150,300", help="chat concurrency levels")
    parser.add_argument("--rounds", type=int, default=3, help="sequential requests per client")
    parser.add_argument("--latency", type=float, default=0.5, help="constant chat latency (s)")
    parser.add_argument("--embed-concurrency", type=int, default=50)
    parser.add_argument("--embed-batch", type=int, default=32)
    parser.add_argument("--max-seconds", type=float, default=55.0, help="bound on the whole run")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    args.levels = [int(x) for x in args.levels.split(",") if x.strip()]
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    deadline = time.monotonic() + args.max_seconds
    with tempfile.TemporaryDirectory(prefix="ragperf-simbench-") as tmp:
        log_path = Path(tmp) / "simulator.log"
        proc, base = start_simulator(args.latency, log_path)
        log.info("simulator pid %d at %s", proc.pid, base)
        report: dict[str, Any] | None = None
        try:
            report = asyncio.run(run_all(args, base, proc.pid, deadline))
        except TimeoutError:
            log.error("the benchmark took longer than --max-seconds %.0f; stopped", args.max_seconds)
        finally:
            returncode = stop_simulator(proc)
            log.info("simulator stopped, exit status %s", returncode)
            server_log = log_path.read_text()
    if server_log.strip():
        print("simulator stderr:\n" + server_log)
    if report is None:
        return 1
    report["config"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    report["cpu_count"] = os.cpu_count()
    print_table(report["results"], args.latency)
    stats = report["simulator_stats"]
    print(f"simulator: max in-flight {stats['max_in_flight']}, responses {stats['responses']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2, ensure_ascii=False))
        print(f"results written to {args.json}")
    return 1 if any(r["errors"] for r in report["results"]) else 0


if __name__ == "__main__":
    sys.exit(main())
