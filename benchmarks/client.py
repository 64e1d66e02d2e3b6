"""The batch client against a 6,000 RPM budget with faults on, beside a plain baseline.

Each contender sends the same requests to a fresh local test server (its own process) that
enforces 6,000 requests per minute (100 per second, quantized per second), answers after
0.2 s, and injects seeded faults into 2% of attempts (429, 500, 502, 503, dropped connection,
truncated body, stall past the 1 s client timeout). The baseline is the well-known pattern:
asyncio + a semaphore + sleep on 429 (Retry-After when given), 1 s sleep on other faults.

Printed per contender: utilization of the budget in steady state (admitted requests per second
over 100, seconds 5 to the end minus 3), 429s from the budget as a share of all requests the
server saw, client CPU seconds per 1,000 requests (this process), wall time.

Run: .venv/bin/python benchmarks/client.py [--seconds 45]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import openai
from rich.console import Console

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from openai_server import write_chat_requests  # noqa: E402

from instructgen.client.runner import RunConfig, run_requests  # noqa: E402

RPM = 6_000
LATENCY_S = 0.2
FAULT_RATE = 0.02
CLIENT_TIMEOUT_S = 1.0
IN_FLIGHT = 64
KEY = "sk-benchmark-not-a-real-key"


def start_server() -> tuple[subprocess.Popen, str]:
    args = [sys.executable, str(ROOT / "tests" / "openai_server.py"), "--rpm", str(RPM)]
    args += ["--latency", str(LATENCY_S), "--fault-rate", str(FAULT_RATE), "--slow", "3"]
    args += ["--injected-retry-after-ms", "20"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    return proc, proc.stdout.readline().split()[-1]


def ours(requests: Path, workdir: Path, base_url: str) -> int:
    config = RunConfig(
        base_url=base_url, rpm=RPM, tpm=10**9, max_in_flight=IN_FLIGHT, timeout_s=CLIENT_TIMEOUT_S
    )
    out = workdir / "ours.jsonl"
    summary = run_requests(
        requests, out, workdir / "ours.sqlite", config, Console(file=io.StringIO()), KEY
    )
    return summary.done


async def _baseline(requests: Path, base_url: str) -> int:
    client = openai.AsyncOpenAI(
        api_key=KEY, base_url=base_url, max_retries=0, timeout=CLIENT_TIMEOUT_S
    )
    semaphore = asyncio.Semaphore(IN_FLIGHT)
    lines = [json.loads(x) for x in requests.read_text().splitlines()]

    async def one(line: dict) -> bool:
        while True:
            async with semaphore:
                try:
                    await client.chat.completions.create(**line["body"])
                    return True
                except openai.RateLimitError as e:
                    wait = float(e.response.headers.get("retry-after", 1))
                except (openai.APIConnectionError, openai.InternalServerError):
                    wait = 1.0
                except openai.APIResponseValidationError:
                    wait = 1.0
                except ValueError:  # truncated JSON body
                    wait = 1.0
            await asyncio.sleep(wait)

    results = await asyncio.gather(*(one(line) for line in lines))
    await client.close()
    return sum(results)


def baseline(requests: Path, workdir: Path, base_url: str) -> int:
    return asyncio.run(_baseline(requests, base_url))


def measure(name: str, contender, requests: Path, workdir: Path, n: int) -> dict:
    proc, base_url = start_server()
    try:
        cpu0, wall0 = time.process_time(), time.monotonic()
        done = contender(requests, workdir, base_url)
        cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
        stats = httpx.get(base_url.removesuffix("/v1") + "/_stats").json()
    finally:
        proc.terminate()
        proc.wait(10)
    per_s = {int(k): v for k, v in stats["admitted_per_second"].items()}
    last = max(per_s)
    steady = [per_s.get(s, 0) for s in range(5, last - 2)]
    budget_429 = stats["statuses"].get("429_budget", 0)
    seen = sum(stats["statuses"].values())
    return {
        "name": name,
        "done": done,
        "utilization": sum(steady) / len(steady) / (RPM / 60) if steady else float("nan"),
        "budget_429_share": budget_429 / seen,
        "budget_429": budget_429,
        "server_saw": seen,
        "cpu_per_1000": cpu / n * 1000,
        "wall_s": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=45, help="load per contender at 6,000 RPM")
    args = parser.parse_args()
    n = int(RPM / 60 * args.seconds)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        requests = workdir / "requests.jsonl"
        write_chat_requests(requests, n)
        print(f"{n:,} requests, budget {RPM:,} RPM, latency {LATENCY_S} s, faults {FAULT_RATE:.0%}")
        rows = [
            measure("instructgen run", ours, requests, workdir, n),
            measure("baseline (semaphore + sleep on 429)", baseline, requests, workdir, n),
        ]
    ours_row, base_row = rows
    print(f"{'':38}{'utilization':>12}{'budget 429s':>14}{'CPU s/1k req':>14}{'wall s':>9}")
    for r in rows:
        print(
            f"{r['name']:38}{r['utilization']:>12.3f}{r['budget_429_share']:>13.2%} "
            f"{r['cpu_per_1000']:>13.2f}{r['wall_s']:>9.1f}"
            f"   ({r['done']:,} done; {r['budget_429']:,} budget 429s of {r['server_saw']:,} seen)"
        )
    print(
        "ratios ours/baseline: utilization "
        f"{ours_row['utilization'] / base_row['utilization']:.2f}x, CPU per request "
        f"{ours_row['cpu_per_1000'] / base_row['cpu_per_1000']:.2f}x, wall "
        f"{ours_row['wall_s'] / base_row['wall_s']:.2f}x, budget 429s "
        f"{ours_row['budget_429']:,} vs {base_row['budget_429']:,}"
    )
    targets_met = ours_row["utilization"] >= 0.95 and ours_row["budget_429_share"] <= 0.02
    print(f"targets (utilization >= 0.95, budget 429s <= 2%): {'met' if targets_met else 'MISSED'}")


if __name__ == "__main__":
    main()
