"""Prometheus metrics of training: rank 0 serves /metrics while it trains; the outcome is pushed once at the end.

- `record(cfg, row)` is called by the trainer with each metrics row (every `train.log_every` steps, rank 0
  only; the keys of `training.logger`). The first call starts an HTTP server on `train.metrics_port` (env
  ASYMVAE_METRICS_PORT wins; 0 picks a free port) bound to ASYMVAE_METRICS_ADDR (default 0.0.0.0, so a
  PodMonitor can scrape it). The server is per process, so runs trained one after another in one process
  (a `preset:` base first) share it.
- `push_outcome(...)` pushes success or failure, steps, duration and the final loss terms to the Pushgateway
  at `train.pushgateway` (env PUSHGATEWAY_URL wins), once per run, from its own registry: a scrape could
  miss a batch job's end, a push cannot (the Prometheus docs' advice for batch jobs).
A metrics failure (port taken, Pushgateway down) is logged and never stops training.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, push_to_gateway, start_http_server

from asymvae.storage.http import request
from asymvae.training.launch import METRICS_ADDR_ENV, METRICS_PORT_ENV, PUSHGATEWAY_ENV, process_rank

log = logging.getLogger(__name__)

PUSH_JOB = "asymvae_train"
PUSH_TIMEOUT_S = 10.0
"""Seconds the outcome's push may take in all (connecting, sending, reading the answer)."""
# The trainer's loss terms that are no loss (TrainResult.metrics, pushed as the final losses).
_NOT_LOSS = {"grad_norm"}


def metrics_port(train_cfg: Any) -> int | None:
    """The port to serve on: ASYMVAE_METRICS_PORT if set (empty: off), else `train.metrics_port`."""
    text = os.environ.get(METRICS_PORT_ENV)
    if text is not None:
        return int(text) if text.strip() else None
    return getattr(train_cfg, "metrics_port", None)


def pushgateway_url(train_cfg: Any) -> str | None:
    """The Pushgateway to push the outcome to: PUSHGATEWAY_URL if set, else `train.pushgateway`."""
    return os.environ.get(PUSHGATEWAY_ENV) or getattr(train_cfg, "pushgateway", None) or None


class TrainingMetrics:
    """Gauges of a running training, served over HTTP from their own registry."""

    def __init__(self, port: int, addr: str = "0.0.0.0") -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.step = Gauge("asymvae_train_step", "Optimizer steps done", ["run"], registry=r)
        self.max_steps = Gauge("asymvae_train_max_steps", "Optimizer steps the run trains for", ["run"], registry=r)
        self.loss = Gauge("asymvae_train_loss", "Loss terms of the last step (term: loss, l1, lpips, ...)",
                          ["run", "term"], registry=r)  # fmt: skip
        self.images_per_second = Gauge(
            "asymvae_train_images_per_second", "Training throughput over the last logging window", ["run"], registry=r
        )
        self.learning_rate = Gauge("asymvae_train_learning_rate", "Current learning rate", ["run"], registry=r)
        self.data_wait = Gauge(
            "asymvae_train_data_wait_ratio",
            "Share of the last window spent waiting for data (0-1)",
            ["run"],
            registry=r,
        )
        self.grad_norm = Gauge("asymvae_train_grad_norm", "Global gradient norm before clipping", ["run"], registry=r)
        self.gpu_memory = Gauge(
            "asymvae_train_gpu_memory_bytes",
            "GPU memory of rank 0 (kind: allocated, reserved, peak_allocated); absent without a GPU",
            ["run", "kind"],
            registry=r,
        )
        self.server, self.thread = start_http_server(port, addr=addr, registry=r)
        self.port = int(self.server.server_port)

    def record(self, run: str, row: dict[str, float], max_steps: int | None = None) -> None:
        """Set the gauges from one metrics row of the trainer."""
        self.step.labels(run).set(row["step"])
        if max_steps is not None:
            self.max_steps.labels(run).set(max_steps)
        if "opt/lr" in row:
            self.learning_rate.labels(run).set(row["opt/lr"])
        if "perf/img_per_s" in row:
            self.images_per_second.labels(run).set(row["perf/img_per_s"])
        if "perf/data_wait_pct" in row:
            self.data_wait.labels(run).set(row["perf/data_wait_pct"] / 100.0)
        if "opt/grad_norm" in row:
            self.grad_norm.labels(run).set(row["opt/grad_norm"])
        for key, value in row.items():
            if key.startswith("train/"):
                self.loss.labels(run, key.removeprefix("train/")).set(value)
        for kind, value in gpu_memory().items():
            self.gpu_memory.labels(run, kind).set(value)

    def close(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()


def gpu_memory() -> dict[str, int]:
    """Allocated, reserved and peak-allocated bytes on the current CUDA device; {} without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return {}
    return {
        "allocated": torch.cuda.memory_allocated(),
        "reserved": torch.cuda.memory_reserved(),
        "peak_allocated": torch.cuda.max_memory_allocated(),
    }


_exporter: TrainingMetrics | None = None
_failed_port: int | None = None


def current() -> TrainingMetrics | None:
    """This process's metrics server, once started."""
    return _exporter


def record(cfg: Any, row: dict[str, float]) -> None:
    """Publish a metrics row of run `cfg` (an ExperimentConfig) on /metrics; starts the server on first use."""
    global _exporter, _failed_port
    port = metrics_port(cfg.train)
    if port is None:
        return
    if _exporter is None:
        if _failed_port == port:
            return
        addr = os.environ.get(METRICS_ADDR_ENV, "0.0.0.0")
        try:
            _exporter = TrainingMetrics(port, addr)
        except OSError as e:
            _failed_port = port
            log.warning(
                "could not serve Prometheus metrics on %s:%s (%s); training goes on without them", addr, port, e
            )
            return
        log.info("serving Prometheus metrics on http://%s:%d/metrics", addr, _exporter.port)
    _exporter.record(cfg.name, row, cfg.train.max_steps)


def stop() -> None:
    """Stop this process's metrics server (tests; a training process just exits)."""
    global _exporter, _failed_port
    if _exporter is not None:
        _exporter.close()
    _exporter = _failed_port = None


def outcome_registry(
    succeeded: bool, steps: int, seconds: float, losses: dict[str, float], error: str = ""
) -> CollectorRegistry:
    """The metrics pushed once at the end of a run (the run's name goes into the push's grouping key)."""
    r = CollectorRegistry()
    Gauge("asymvae_run_success", "1 if the run finished, 0 if it failed", registry=r).set(1 if succeeded else 0)
    Gauge("asymvae_run_steps", "Optimizer steps reached", registry=r).set(steps)
    Gauge("asymvae_run_duration_seconds", "Wall time of the run", registry=r).set(seconds)
    Gauge("asymvae_run_completion_timestamp_seconds", "When the run ended (Unix time)", registry=r).set(time.time())
    final = Gauge("asymvae_run_final_loss", "Loss terms of the last step", ["term"], registry=r)
    for term, value in losses.items():
        if term not in _NOT_LOSS:
            final.labels(term).set(value)
    if error:
        Gauge("asymvae_run_error", "The exception that ended the run", ["error"], registry=r).labels(error).set(1)
    return r


def _bounded_handler(
    url: str, method: str, timeout: float | None, headers: list[tuple[str, str]], data: bytes
) -> Callable[[], None]:
    """prometheus_client's push handler over `storage.http.request`: the whole push within `timeout` seconds,
    to the gateway's host only (a redirect is refused, not followed)."""

    def handle() -> None:
        answer = request(method, url, data, dict(headers), timeout or PUSH_TIMEOUT_S)
        if answer.status >= 400:
            raise OSError(f"the Pushgateway answered HTTP {answer.status}: {answer.body[:200]!r}")

    return handle


def push_outcome(
    cfg: Any,
    succeeded: bool,
    steps: int,
    seconds: float,
    losses: dict[str, float] | None = None,
    error: BaseException | None = None,
) -> bool:
    """Push the run's outcome to the configured Pushgateway (rank 0 only); False when none is set or it failed."""
    url = pushgateway_url(cfg.train)
    if not url or process_rank() != 0:
        return False
    registry = outcome_registry(succeeded, steps, seconds, losses or {}, type(error).__name__ if error else "")
    try:
        push_to_gateway(
            url, job=PUSH_JOB, grouping_key={"run": cfg.name}, registry=registry, timeout=PUSH_TIMEOUT_S,
            handler=_bounded_handler,
        )  # fmt: skip
    except Exception as e:  # an unreachable Pushgateway must not turn a finished run into a failed one
        log.warning("could not push the run's outcome to the Pushgateway at %s: %s", url, e)
        return False
    log.info("pushed the run's outcome (%s) to %s", "succeeded" if succeeded else "failed", url)
    return True
