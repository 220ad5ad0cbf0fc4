#!/usr/bin/env python3
"""The Python SDK's own cost per tool call, next to a raw http.client call of the same route.

Both sides make the same `POST /v1/tools/serpapi/search` over one keep-alive connection with a
token held in advance; the SDK adds its token check, idempotency key, JSON handling, typed answer
(and with DPoP a signed proof per call). Measured in alternating blocks so drift hits both:
wall time per call (median, p99) and client CPU time per call (the SDK's own work; the gateway
runs in another process).

    npm start                                            # the demo, or any gateway with serpapi
    npx 4runr agent create --name bench-bot              # with RUNR_ADMIN_KEY set
    PYTHONPATH=sdk-python python3 bench/sdk-python-overhead.py bench-bot.key.json [calls]
"""

from __future__ import annotations

import http.client
import json
import statistics
import sys
import time
from urllib.parse import urlsplit

from runrgateway import GatewayClient

BLOCK = 100


def measure(call, calls: int):
    walls = []
    cpu_start = time.process_time()
    for _ in range(calls):
        started = time.perf_counter()
        call()
        walls.append(time.perf_counter() - started)
    return walls, (time.process_time() - cpu_start) / calls


def report(name: str, walls, cpu: float) -> None:
    walls = sorted(walls)
    p99 = walls[min(len(walls) - 1, int(len(walls) * 0.99))]
    print(f"{name:<14} median {statistics.median(walls) * 1e6:8.0f} µs   p99 {p99 * 1e6:8.0f} µs   client CPU {cpu * 1e6:6.0f} µs/call")


def main(argv) -> int:
    if len(argv) < 2:
        print(__doc__)
        return 2
    calls = int(argv[2]) if len(argv) > 2 else 1000
    body = {"q": "bench", "num": 5}
    sdk = GatewayClient(key_file=argv[1], scope="serpapi:search")
    dpop = GatewayClient(key_file=argv[1], scope="serpapi:search", dpop=True)
    token = sdk.token()
    parts = urlsplit(sdk.base_url)
    raw_conn = http.client.HTTPConnection(parts.hostname, parts.port)
    raw_body = json.dumps(body).encode()
    raw_headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def raw() -> None:
        raw_conn.request("POST", "/v1/tools/serpapi/search", raw_body, raw_headers)
        answer = raw_conn.getresponse()
        data = answer.read()
        if answer.status != 200:
            raise SystemExit(f"raw call: HTTP {answer.status} {data[:200]!r}")

    sides = {"raw http.client": raw, "sdk": lambda: sdk.serpapi.search(**body), "sdk + DPoP": lambda: dpop.serpapi.search(**body)}
    for call in sides.values():  # warm up connections, tokens and caches
        for _ in range(20):
            call()
    results = {name: ([], []) for name in sides}
    for _ in range(max(1, calls // BLOCK)):
        for name, call in sides.items():
            walls, cpu = measure(call, BLOCK)
            results[name][0].extend(walls)
            results[name][1].append(cpu)
    print(f"{calls} calls each, {sdk.base_url}, Python {sys.version.split()[0]}")
    for name, (walls, cpus) in results.items():
        report(name, walls, statistics.median(cpus))
    base = statistics.median(results["raw http.client"][0])
    for name in ("sdk", "sdk + DPoP"):
        print(f"{name} overhead: {(statistics.median(results[name][0]) - base) * 1e6:.0f} µs per call (median wall)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
