"""Load test of `emulate serve`: many concurrent streaming clients over loopback.

Run by hand: `python bench/bench_server.py` (serves the micro toy world, building it on first
use), `--world DIR` (a built world) or `--config FILE --model NAME`. Starts the server as a
subprocess on a free 127.0.0.1 port, takes every prompt's greedy completion from the idle server
as the reference, then runs phases of C concurrent streaming clients sharing R requests (C=1 is
the one-at-a-time baseline), and one client again with speculative decoding
(`emulate.speculative`): its median latency against the lockstep one-client phase of the same
repeat. Then C concurrent speculative clients (`--speculative-clients`, default 16): their
throughput against the one speculative client's, their median latency against the lockstep
phase of as many clients in the same repeat (speculative rows join the running speculative
batch between rounds, as lockstep rows join theirs between steps).
Serving a world (`--world`), the clients ask its own held-out questions, as a user of that
world would, each in one repeat only (`--names`: made-up names the world never read, cycled).
Each response must end with `[DONE]`, carry a finish reason and equal its reference text, or it
counts as lost or corrupted. Bounded: R requests per phase and a deadline per phase.
Prints a table and writes bench/results/server.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
from server_workload import PROMPTS, prompt_sets, world_questions, world_yaml

HERE = Path(__file__).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args, port: int) -> subprocess.Popen:
    command = [sys.executable, "-c", "from emulate.cli import app; app()", "serve",
               "--port", str(port),
               "--host", "127.0.0.1", "--log-level", "warning", "--threads", str(args.threads),
               "--engine", args.engine]
    if args.world:
        server = {"max_cohorts": args.max_cohorts, "max_batch": args.max_batch}
        args.config = world_yaml(Path(args.world), Path(args.out).with_suffix(".yaml"), server,
                                 args.lookup)
    command += ["--config", args.config] if args.config else ["--world-size", "micro"]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    return subprocess.Popen(command, env=env)


def wait_ready(url: str, process: subprocess.Popen, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited with code {process.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit("the server did not come up")


def body(args, prompt: str, stream: bool, speculative: bool = False) -> dict:
    payload = {"model": args.model, "messages": [{"role": "user", "content": prompt}],
               "max_tokens": args.max_tokens, "temperature": 0, "stream": stream}
    if speculative:
        payload["emulate"] = {"speculative": True}
    elif args.lookup:  # the configured defaults decode speculatively unless asked not to
        payload["emulate"] = {"speculative": False}
    return payload


class Connection:
    """A minimal keep-alive HTTP/1.1 client over asyncio streams: a load generator should cost
    far less than the server it measures (httpx spends ~1 ms per streamed chunk here)."""

    def __init__(self, url: str):
        host, port = url.removeprefix("http://").split(":")
        self.host, self.port = host, int(port)
        self.reader = self.writer = None

    async def post_stream(self, path: str, payload: dict):
        """Send a POST; yield (status, None) then each chunk of the body as bytes."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        data = json.dumps(payload).encode()
        self.writer.write(
            f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:] if x)}
        yield status, None
        if headers.get("transfer-encoding") == "chunked":
            while True:
                size = int((await self.reader.readuntil(b"\r\n"))[:-2].split(b";")[0], 16)
                chunk = await self.reader.readexactly(size + 2)
                if size == 0:
                    break
                yield status, chunk[:-2]
        else:
            yield status, await self.reader.readexactly(int(headers.get("content-length", 0)))
        if headers.get("connection", "").lower() == "close":
            await self.close()

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.reader = self.writer = None


async def one_request(connection: Connection, args, prompt: str,
                      speculative: bool = False) -> dict:
    """Stream one chat completion; time to first token, latency, text, and how it ended."""
    start = time.perf_counter()
    first = None
    text, finish, done, status, buffer = [], None, False, None, b""
    try:
        async for status, chunk in connection.post_stream("/v1/chat/completions",
                                                          body(args, prompt, True,
                                                               speculative)):
            if chunk is None or status != 200:
                continue
            buffer += chunk
            *events, buffer = buffer.split(b"\n\n")
            for event in events:
                if not event.startswith(b"data: "):
                    continue
                if event == b"data: [DONE]":
                    done = True
                    continue
                for choice in json.loads(event[6:]).get("choices", []):
                    content = choice["delta"].get("content")
                    if content:
                        first = first or time.perf_counter()
                        text.append(content)
                    finish = choice.get("finish_reason") or finish
    except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
        await connection.close()
        return {"status": status, "error": repr(exc), "latency": time.perf_counter() - start}
    end = time.perf_counter()
    if status != 200:
        return {"status": status, "latency": end - start}
    return {"status": status, "text": "".join(text), "finish": finish, "done": done,
            "latency": end - start, "ttft": (first or end) - start}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its children (the engine process), from Linux
    /proc; 0 where unavailable."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if stat.parent.name == str(pid) or fields[1] == str(pid):  # the server or its child
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


async def phase(url: str, args, clients: int, requests: int, expected: dict,
                speculative: bool = False, prompts: list[str] = PROMPTS) -> dict:
    """`clients` concurrent clients take the next request until `requests` have been sent,
    request i asking prompts[i] (cycling)."""
    results: list[dict] = []
    counter = iter(range(requests))
    deadline = time.monotonic() + args.deadline

    async def client() -> None:
        connection = Connection(url)
        for i in counter:
            if time.monotonic() > deadline:
                break
            prompt = prompts[i % len(prompts)]
            try:
                result = await asyncio.wait_for(
                    one_request(connection, args, prompt, speculative), args.timeout)
            except TimeoutError:
                await connection.close()
                result = {"status": None, "error": "timed out"}
            result["prompt"] = prompt
            results.append(result)
        await connection.close()

    start = time.perf_counter()
    async with httpx.AsyncClient(base_url=url, timeout=args.timeout) as http:
        before = (await http.get("/health")).json()
        cpu = cpu_seconds(args.server_pid), time.process_time()
        await asyncio.gather(*[client() for _ in range(clients)])
        cpu = cpu_seconds(args.server_pid) - cpu[0], time.process_time() - cpu[1]
        after = (await http.get("/health")).json()
    wall = time.perf_counter() - start
    server = {k: after[k] - before[k] for k in ("steps", "prefills", "tokens", "cancelled_rows")}
    ok = [r for r in results if r.get("status") == 200 and "error" not in r]
    lost = [r for r in ok if not r["done"] or r["finish"] is None]
    corrupted = [r for r in ok if r not in lost and r["text"] != expected[r["prompt"]]]
    good = [r for r in ok if r not in lost and r not in corrupted]
    latencies = sorted(r["latency"] for r in good)
    ttfts = sorted(r["ttft"] for r in good)
    return {
        "clients": clients, "speculative": speculative, "requests": requests,
        "sent": len(results), "completed": len(good),
        "errors": len(results) - len(ok), "lost": len(lost), "corrupted": len(corrupted),
        "unsent": requests - len(results), "wall_s": round(wall, 2),
        "throughput_rps": round(len(good) / wall, 2),
        "p50_latency_ms": pct(latencies, 50), "p99_latency_ms": pct(latencies, 99),
        "p50_ttft_ms": pct(ttfts, 50), "p99_ttft_ms": pct(ttfts, 99),
        "statuses": sorted({str(r.get("status")) for r in results}),
        "server": server,
        "rows_per_step": round(server["tokens"] / max(server["steps"], 1), 2),
        "server_cpu_s": round(cpu[0], 2), "client_cpu_s": round(cpu[1], 2),
        "examples": [{k: r.get(k) for k in ("prompt", "status", "error", "text")}
                     for r in (lost + corrupted)[:3]] or None,
    }


def pct(values: list[float], q: int) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return round(values[0] * 1000, 1)
    return round(statistics.quantiles(values, n=100, method="inclusive")[q - 1] * 1000, 1)


async def run(url: str, args) -> dict:
    sets = prompt_sets(args)
    async with httpx.AsyncClient(base_url=url, timeout=args.timeout) as http:
        expected = {}
        used = dict.fromkeys(p for one, crowd in sets for p in one + crowd)
        for prompt in used:  # the reference: each prompt alone on an idle server
            r = await http.post("/v1/chat/completions", json=body(args, prompt, False))
            r.raise_for_status()
            expected[prompt] = r.json()["choices"][0]["message"]["content"]
    phases = []
    for repeat in range(args.repeats):  # the machine's load drifts: each repeat has its own base
        one, crowded = sets[repeat]
        base = await phase(url, args, 1, args.baseline_requests, expected, prompts=one)
        speculative = await phase(url, args, 1, args.baseline_requests, expected, True, one)
        speculative["latency_ratio"] = round(
            base["p50_latency_ms"] / speculative["p50_latency_ms"], 2)
        lockstep = {c: await phase(url, args, c, args.requests, expected, prompts=crowded)
                    for c in sorted({*args.clients, *args.speculative_clients})}
        crowds = []
        for c in args.speculative_clients:
            crowd = await phase(url, args, c, args.requests, expected, True, crowded)
            crowd["speedup_vs_one_speculative_client"] = round(
                crowd["throughput_rps"] / speculative["throughput_rps"], 2)
            crowd["latency_vs_lockstep"] = round(
                crowd["p50_latency_ms"] / lockstep[c]["p50_latency_ms"], 2)
            crowds.append(crowd)
        rounds = [base, speculative, *lockstep.values(), *crowds]
        for p in rounds:
            p["repeat"] = repeat
            p["speedup_vs_one_client"] = round(p["throughput_rps"] / base["throughput_rps"], 2)
        phases += rounds
    summary = {
        str(c): {
            "median_speedup": statistics.median(p["speedup_vs_one_client"] for p in phases
                                                if p["clients"] == c and not p["speculative"]),
            "lost_or_corrupted": sum(p["lost"] + p["corrupted"] for p in phases
                                     if p["clients"] == c and not p["speculative"]),
            "errors": sum(p["errors"] for p in phases
                          if p["clients"] == c and not p["speculative"]),
        }
        for c in args.clients
    }
    spec = [p for p in phases if p["speculative"] and p["clients"] == 1]
    summary["speculative, 1"] = {
        "median_latency_ratio": statistics.median(p["latency_ratio"] for p in spec),
        "lost_or_corrupted": sum(p["lost"] + p["corrupted"] for p in spec),
        "errors": sum(p["errors"] for p in spec),
    }
    for c in args.speculative_clients:
        crowd = [p for p in phases if p["speculative"] and p["clients"] == c]
        summary[f"speculative, {c}"] = {
            "median_speedup_vs_one_speculative_client": statistics.median(
                p["speedup_vs_one_speculative_client"] for p in crowd),
            "speedups": [p["speedup_vs_one_speculative_client"] for p in crowd],
            "median_latency_vs_lockstep": statistics.median(
                p["latency_vs_lockstep"] for p in crowd),
            "latency_ratios": [p["latency_vs_lockstep"] for p in crowd],
            "lost_or_corrupted": sum(p["lost"] + p["corrupted"] for p in crowd),
            "errors": sum(p["errors"] for p in crowd),
        }
    return {"expected_chars": {p: len(t) for p, t in expected.items()}, "phases": phases,
            "summary": summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", help="server config (default: the micro toy world)")
    parser.add_argument("--world", help="a built toy world folder to serve instead")
    parser.add_argument("--url", help="use a running server at http://127.0.0.1:PORT instead")
    parser.add_argument("--server-pid", type=int, help="with --url: its pid, for CPU time")
    parser.add_argument("--max-cohorts", type=int, default=4, help="with --world")
    parser.add_argument("--max-batch", type=int, default=32, help="with --world")
    parser.add_argument("--model", default="toy-eft", help="composition to request")
    parser.add_argument("--clients", type=int, nargs="+", default=[4, 16, 64])
    parser.add_argument("--requests", type=int, default=200,
                        help="requests per phase (enough that ramp-up and tail are a small part)")
    parser.add_argument("--speculative-clients", type=int, nargs="*", default=[16],
                        help="concurrent speculative clients (each also run lockstep)")
    parser.add_argument("--lookup", choices=["true", "own", "false"],
                        help="with --world: the speculative drafts' lookup (server default true)")
    parser.add_argument("--names", action="store_true",
                        help="with --world: ask the fixed made-up-name prompts (cycled, answers "
                             "the world never read) instead of its own held-out questions")
    parser.add_argument("--baseline-requests", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=2,
                        help="rounds of (one client, then each concurrency), each with its own "
                             "baseline, so a ratio compares phases run under the same load")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--deadline", type=float, default=180, help="seconds per phase")
    parser.add_argument("--timeout", type=float, default=120, help="seconds per request")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in the server")
    parser.add_argument("--engine", choices=["process", "thread"], default="process",
                        help="where the server's models decode (emulate serve --engine)")
    parser.add_argument("--out", default=str(HERE / "results" / "server.json"))
    args = parser.parse_args()
    args.questions = world_questions(Path(args.world)) if args.world and not args.names else None

    if args.url:  # a server started by hand (e.g. under a profiler)
        if not args.url.startswith(("http://127.0.0.1", "http://localhost")):
            raise SystemExit("loopback only: --url must be http://127.0.0.1:PORT")
        url, args.server_pid = args.url, args.server_pid or 0
        report = asyncio.run(run(url, args))
    else:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = start_server(args, port)
        args.server_pid = server.pid
        try:
            wait_ready(url, server)
            report = asyncio.run(run(url, args))
        finally:
            server.terminate()
            server.wait(timeout=30)
    report["settings"] = {k: v for k, v in vars(args).items() if k not in ("out", "server_pid")}
    print_table(report["phases"])
    for clients, figures in report["summary"].items():
        if "median_speedup_vs_one_speculative_client" in figures:
            print(f"{clients} clients: throughput "
                  f"{figures['median_speedup_vs_one_speculative_client']:.2f}x one speculative "
                  f"client's {figures['speedups']}, median latency "
                  f"{figures['median_latency_vs_lockstep']:.2f}x the lockstep server's at the "
                  f"same load {figures['latency_ratios']}, {figures['lost_or_corrupted']} lost "
                  f"or corrupted, {figures['errors']} errors")
            continue
        if "median_latency_ratio" in figures:
            print(f"one speculative client: median latency {figures['median_latency_ratio']:.2f}x "
                  f"lower than lockstep, {figures['lost_or_corrupted']} lost or corrupted "
                  f"(greedy: its texts must equal lockstep's), {figures['errors']} errors")
            continue
        print(f"{clients:>3} clients: median speedup {figures['median_speedup']:.2f}x over one "
              f"client, {figures['lost_or_corrupted']} lost or corrupted, "
              f"{figures['errors']} errors")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out}")


def print_table(phases: list[dict]) -> None:
    columns = ("repeat", "clients", "speculative", "sent", "completed", "errors", "lost",
               "corrupted", "p50_latency_ms", "p99_latency_ms", "p50_ttft_ms", "p99_ttft_ms",
               "throughput_rps", "speedup_vs_one_client", "rows_per_step", "wall_s", "server_cpu_s",
               "client_cpu_s")
    heads = ("rep", "clients", "spec", "sent", "ok", "err", "lost", "corrupt", "p50 ms", "p99 ms",
             "p50 ttft", "p99 ttft", "req/s", "speedup", "rows/step", "wall s", "srv cpu",
             "cli cpu")
    rows = [[str(p[c]) for c in columns] for p in phases]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(heads)]
    print("  ".join(h.rjust(w) for h, w in zip(heads, widths, strict=True)))
    for row in rows:
        print("  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)))


if __name__ == "__main__":
    main()
