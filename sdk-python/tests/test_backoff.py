"""Backoff, jitter and the retry decision, without any network."""

from __future__ import annotations

import random
import unittest
from email.utils import formatdate

from support import fast_retry  # noqa: F401  (puts the package on sys.path)

from runrgateway import CircuitOpenError, GatewayError, NetworkError, QuotaError, RateLimitError, RetryPolicy
from runrgateway.errors import parse_retry_after


class BackoffBounds(unittest.TestCase):
    def test_full_jitter_stays_between_zero_and_the_exponential_bound(self) -> None:
        policy = RetryPolicy(base_delay=0.1, max_delay=10.0, random=random.Random(7).random)
        for retry in range(8):
            bound = min(10.0, 0.1 * 2**retry)
            samples = [policy.backoff(retry) for _ in range(2000)]
            self.assertGreaterEqual(min(samples), 0.0)
            self.assertLessEqual(max(samples), bound)
            # Full jitter spreads over the whole range, not around the bound.
            self.assertLess(min(samples), bound * 0.05)
            self.assertGreater(max(samples), bound * 0.95)
            self.assertAlmostEqual(sum(samples) / len(samples), bound / 2, delta=bound * 0.05)

    def test_the_bound_doubles_per_retry_until_max_delay(self) -> None:
        policy = RetryPolicy(base_delay=0.25, max_delay=3.0, random=lambda: 1.0)
        self.assertEqual([policy.backoff(r) for r in range(6)], [0.25, 0.5, 1.0, 2.0, 3.0, 3.0])

    def test_a_huge_retry_number_neither_overflows_nor_passes_max_delay(self) -> None:
        policy = RetryPolicy(base_delay=1.0, max_delay=4.0, random=lambda: 1.0)
        self.assertEqual(policy.backoff(10_000), 4.0)

    def test_refuses_negative_settings(self) -> None:
        with self.assertRaises(ValueError):
            RetryPolicy(max_retries=-1)
        with self.assertRaises(ValueError):
            RetryPolicy(base_delay=-0.1)


def error(status: int, code: str, retry_after=None, cls=GatewayError) -> GatewayError:
    return cls(code, code, status, None, None, retry_after)


class RetryDecision(unittest.TestCase):
    policy = RetryPolicy(max_retries=3, base_delay=0.1, max_delay=1.0, max_retry_after=10.0, random=lambda: 0.5)

    def test_retries_429_and_503_after_the_retry_after_it_was_given(self) -> None:
        self.assertEqual(self.policy.delay_for(error(429, "rate_limited", 2.0, RateLimitError), 0, True), 2.0)
        self.assertEqual(self.policy.delay_for(error(503, "bulkhead_full", 1.0), 1, True), 1.0)

    def test_backs_off_on_429_and_503_without_retry_after(self) -> None:
        self.assertEqual(self.policy.delay_for(error(503, "circuit_open", None, CircuitOpenError), 1, True), 0.1)
        self.assertEqual(self.policy.delay_for(error(429, "rate_limited", None, RateLimitError), 0, True), 0.05)

    def test_does_not_wait_out_a_retry_after_longer_than_the_cap(self) -> None:
        self.assertIsNone(self.policy.delay_for(error(429, "quota_exceeded", 3600.0, QuotaError), 0, True))

    def test_never_retries_a_call_that_is_not_safe_to_repeat(self) -> None:
        self.assertIsNone(self.policy.delay_for(error(503, "circuit_open", 1.0), 0, False))
        self.assertIsNone(self.policy.delay_for(error(429, "rate_limited", 1.0, RateLimitError), 0, False))
        reset = NetworkError("network_error", "reset", details={"phase": "exchange"})
        self.assertIsNone(self.policy.delay_for(reset, 0, False))

    def test_retries_a_refused_connection_even_for_an_unsafe_call(self) -> None:
        refused = NetworkError("network_error", "refused", details={"phase": "connect"})
        self.assertEqual(self.policy.delay_for(refused, 0, False), 0.05)

    def test_stops_after_max_retries(self) -> None:
        self.assertIsNone(self.policy.delay_for(error(503, "circuit_open", 1.0), 3, True))

    def test_does_not_retry_client_errors_upstream_errors_or_a_missing_secret(self) -> None:
        for status, code in [(400, "bad_request"), (401, "unauthenticated"), (403, "policy_denied"),
                             (502, "upstream_error"), (504, "upstream_timeout"), (503, "tool_unavailable")]:
            self.assertIsNone(self.policy.delay_for(error(status, code, 1.0), 0, True), code)


class RetryAfterHeader(unittest.TestCase):
    def test_reads_delay_seconds(self) -> None:
        self.assertEqual(parse_retry_after("120"), 120.0)
        self.assertEqual(parse_retry_after(" 0 "), 0.0)

    def test_reads_an_http_date_as_the_seconds_until_it(self) -> None:
        now = 1_700_000_000.0
        self.assertAlmostEqual(parse_retry_after(formatdate(now + 30, usegmt=True), now=now), 30.0, delta=1)
        self.assertEqual(parse_retry_after(formatdate(now - 30, usegmt=True), now=now), 0.0)

    def test_ignores_absent_negative_and_garbage_values(self) -> None:
        for value in [None, "", "-5", "soon", "1.5e9x"]:
            self.assertIsNone(parse_retry_after(value), value)


if __name__ == "__main__":
    unittest.main()
