#!/usr/bin/env python3
"""A small research agent on runrgateway: it gets a token with its own key, searches the web,
reads the pages its policy lets it read, and copes with a policy denial and a rate limit.

Against the demo (`npm start`, which prints the admin key on its first start):

    export RUNR_ADMIN_KEY=...                      # from the banner
    npx 4runr agent create --name research-bot     # writes research-bot.key.json
    PYTHONPATH=sdk-python python3 examples/agent.py research-bot.key.json "4runr gateway"

The demo's policy lets every agent search (redacted, 100 an hour) and fetch pages on 127.0.0.1 and
*.wikipedia.org; the fake search results link elsewhere, so those fetches are denied, which the
agent reports and skips. Run it again with the same question to meet the loop guard or the quota.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any, Callable, Optional

from runrgateway import (
    GatewayClient,
    GatewayError,
    GatewayTimeoutError,
    PolicyError,
    RateLimitError,
    ToolResult,
    UpstreamError,
)

#: The longest wait for a rate limit the agent sits out; longer ones end the research politely.
PATIENCE_SECONDS = 10.0


def politely(what: str, call: Callable[[], ToolResult]) -> Optional[ToolResult]:
    """Run a tool call; a denial, a failing source or a long rate limit is reported as None."""
    for _ in range(2):
        try:
            return call()
        except PolicyError as denied:
            print(f"  {what}: not allowed ({denied.code}: {denied.reason or denied.message})")
            return None
        except (UpstreamError, GatewayTimeoutError) as failed:
            print(f"  {what}: the source failed ({failed.code})")
            return None
        except RateLimitError as limited:
            wait = limited.retry_after or 0.0
            if wait > PATIENCE_SECONDS:
                print(f"  {what}: {limited.code}, next try possible in {wait:.0f}s; stopping here")
                return None
            print(f"  {what}: {limited.code}, waiting {wait:.0f}s")
            time.sleep(wait)
    return None


def research(client: GatewayClient, question: str) -> int:
    print(f"researching {question!r} as agent {client.agent_id}")
    found = politely("search", lambda: client.serpapi.search(q=question, num=3))
    if found is None:
        return 0
    results: list[dict[str, Any]] = found.data.get("organic_results", [])
    print(f"  {len(results)} results (correlation id {found.correlation_id})")
    for result in results:
        print(f"  - {result.get('title')}: {result.get('snippet')}")
    # Sources first, then the gateway's own demo page, which the demo policy allows.
    pages = [r["link"] for r in results if isinstance(r.get("link"), str)]
    pages.append(f"{client.base_url}/demo/hello")
    for url in pages:
        page = politely(f"fetch {url}", lambda url=url: client.http_fetch.get(url=url))
        if page is not None:
            body = page.data.get("body")
            size = len(body) if isinstance(body, str) else len(json.dumps(body))
            print(f"  fetched {url}: HTTP {page.data.get('status')}, {size} characters")
    return 0


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__)
        return 2
    question = argv[2] if len(argv) > 2 else "4runr gateway"
    try:
        with GatewayClient(key_file=argv[1], intent="research") as client:
            return research(client, question)
    except GatewayError as failed:
        # Anything else (bad key, revoked agent, gateway down) ends the run with its code.
        print(f"research failed: {failed}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
