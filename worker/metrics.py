"""Prometheus metrics of the worker: checks by platform and outcome, latency, status, sweeps,
revocations, platform notices and webhook deliveries."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server


class WorkerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.checks = Counter(
            "octopost_checks_total",
            "Token checks by platform and outcome.",
            ["platform", "outcome"],
            registry=self.registry,
        )
        self.check_latency = Histogram(
            "octopost_check_duration_seconds",
            "Platform call latency by platform.",
            ["platform"],
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=self.registry,
        )
        self.accounts = Gauge(
            "octopost_accounts",
            "Connected accounts by platform and health status (refreshed after each sweep).",
            ["platform", "status"],
            registry=self.registry,
        )
        self.sweep_duration = Histogram(
            "octopost_sweep_duration_seconds",
            "Wall time of a sweep's claiming phase.",
            buckets=(0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600),
            registry=self.registry,
        )
        self.revocations = Counter(
            "octopost_revocations_total",
            "Revocation attempts by platform and result.",
            ["platform", "result"],
            registry=self.registry,
        )
        self.notices = Counter(
            "octopost_platform_notices_total",
            "Platform push notices applied, by platform and action.",
            ["platform", "action"],
            registry=self.registry,
        )
        self.notice_accounts = Counter(
            "octopost_platform_notice_accounts_total",
            "Accounts changed by platform push notices, by platform and action.",
            ["platform", "action"],
            registry=self.registry,
        )

        self.webhook_deliveries = Counter(
            "octopost_webhook_deliveries_total",
            "Webhook deliveries that ended, by event type and result (delivered, failed).",
            ["type", "result"],
            registry=self.registry,
        )
        self.webhook_attempts = Counter(
            "octopost_webhook_attempts_total",
            "Webhook attempts by result (success, http_error, no_response).",
            ["result"],
            registry=self.registry,
        )
        self.webhook_attempt_duration = Histogram(
            "octopost_webhook_attempt_duration_seconds",
            "Time from sending a webhook to its answer (or the timeout).",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0),
            registry=self.registry,
        )
        self.webhook_oldest_undelivered = Gauge(
            "octopost_webhook_oldest_undelivered_seconds",
            "Age of the oldest webhook delivery still pending (refreshed by the relay).",
            registry=self.registry,
        )

        # labels() hashes and locks on every call; a check asks for the same few children
        self._children: dict[tuple[str, ...], Any] = {}

    def checked(self, platform: str, outcome: str) -> None:
        key = ("checks", platform, outcome)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.checks.labels(platform, outcome)
        child.inc()

    def call_took(self, platform: str, seconds: float) -> None:
        key = ("latency", platform)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.check_latency.labels(platform)
        child.observe(seconds)

    def serve(self, port: int) -> None:
        if port:
            start_http_server(port, addr="127.0.0.1", registry=self.registry)
