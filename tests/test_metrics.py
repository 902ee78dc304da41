"""Prometheus metrics of training: /metrics scraped during a real tiny run, and the outcome pushed once."""

from __future__ import annotations

import socket
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from asymvae.data.sources import DataSourceError
from asymvae.training import metrics as live_metrics
from asymvae.training.run import train
from tests.support.tiny_models import tiny_config


class PushgatewayStandIn:
    """Records what a Pushgateway would receive (method, path, body); answers 200 like the real one."""

    def __init__(self) -> None:
        self.received: list[tuple[str, str, str]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _take(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                outer.received.append((self.command, self.path, body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_PUT = do_POST = _take

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def gateway(monkeypatch):
    monkeypatch.setenv(live_metrics.METRICS_ADDR_ENV, "127.0.0.1")
    monkeypatch.delenv(live_metrics.METRICS_PORT_ENV, raising=False)
    monkeypatch.delenv(live_metrics.PUSHGATEWAY_ENV, raising=False)
    live_metrics.stop()
    server = PushgatewayStandIn()
    yield server
    server.close()
    live_metrics.stop()


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """{(name, sorted labels): value} of a Prometheus text exposition."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_are_served_during_a_local_run_and_the_outcome_is_pushed_once(base_vae_dir, tmp_path, gateway):
    steps = 20
    cfg = tiny_config(
        base_vae_dir, tmp_path / "run", f"train.max_steps={steps}", f"train.checkpoint_every={steps}",
        "train.metrics_port=0", f"train.pushgateway={gateway.url}",
    )  # fmt: skip
    result: dict = {}
    runner = threading.Thread(target=lambda: result.update(out=train(cfg)), daemon=True)
    runner.start()
    seen_during = None
    while runner.is_alive() and seen_during is None:
        exporter = live_metrics.current()
        if exporter is not None:
            with urllib.request.urlopen(f"http://127.0.0.1:{exporter.port}/metrics", timeout=10) as r:
                got = samples(r.read().decode())
            if got.get(("asymvae_train_step", (("run", "tiny"),)), 0) >= 1:
                seen_during = got
        time.sleep(0.02)
    runner.join(timeout=300)
    assert "out" in result, "the training thread did not finish"
    assert seen_during is not None, "no step metric was scraped while training ran"
    run = (("run", "tiny"),)
    assert 1 <= seen_during[("asymvae_train_step", run)] < steps  # scraped mid-run, not after
    assert seen_during[("asymvae_train_max_steps", run)] == steps
    assert seen_during[("asymvae_train_images_per_second", run)] > 0
    assert 0 <= seen_during[("asymvae_train_data_wait_ratio", run)] <= 1
    assert seen_during[("asymvae_train_learning_rate", run)] > 0
    assert seen_during[("asymvae_train_loss", (("run", "tiny"), ("term", "l1")))] > 0
    assert not any(name == "asymvae_train_gpu_memory_bytes" for name, _ in seen_during)  # no GPU here: absent

    # The final outcome: one push, to this run's grouping key, with what the run reported.
    (push,) = gateway.received
    method, path, body = push
    assert method == "PUT" and path == "/metrics/job/asymvae_train/run/tiny"
    pushed = samples(body)
    assert pushed[("asymvae_run_success", ())] == 1
    assert pushed[("asymvae_run_steps", ())] == steps == result["out"].step
    assert pushed[("asymvae_run_final_loss", (("term", "l1"),))] == pytest.approx(result["out"].metrics["l1"])


def test_a_failed_run_pushes_its_failure(base_vae_dir, tmp_path, gateway):
    cfg = tiny_config(base_vae_dir, tmp_path / "run", f"data.source={tmp_path / 'missing'}",
                      f"train.pushgateway={gateway.url}")  # fmt: skip
    with pytest.raises(DataSourceError):
        train(cfg)
    (push,) = gateway.received
    pushed = samples(push[2])
    assert pushed[("asymvae_run_success", ())] == 0
    assert pushed[("asymvae_run_error", (("error", "DataSourceError"),))] == 1


def test_env_overrides_the_config_and_a_taken_port_does_not_stop_training(base_vae_dir, tmp_path, gateway, monkeypatch):
    cfg = tiny_config(base_vae_dir, tmp_path / "run", "train.metrics_port=1")
    monkeypatch.setenv(live_metrics.METRICS_PORT_ENV, "")
    assert live_metrics.metrics_port(cfg.train) is None
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        monkeypatch.setenv(live_metrics.METRICS_PORT_ENV, str(taken.getsockname()[1]))
        assert live_metrics.metrics_port(cfg.train) == taken.getsockname()[1]
        live_metrics.record(cfg, {"step": 1, "train/loss": 0.5})
    assert live_metrics.current() is None  # logged a warning, training goes on
    monkeypatch.setenv(live_metrics.PUSHGATEWAY_ENV, gateway.url)
    assert live_metrics.pushgateway_url(cfg.train) == gateway.url


def test_an_unreachable_pushgateway_is_a_warning_not_an_error(base_vae_dir, tmp_path, gateway):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    cfg = tiny_config(base_vae_dir, tmp_path / "run", f"train.pushgateway=http://127.0.0.1:{closed}")
    assert live_metrics.push_outcome(cfg, True, 4, 1.0, {"loss": 0.1}) is False


@pytest.mark.integration  # a loopback server, waited on until the deadline
def test_a_gateway_that_answers_a_byte_at_a_time_cannot_hold_the_end_of_a_run(monkeypatch, caplog):
    class Drip(BaseHTTPRequestHandler):
        def do_PUT(self) -> None:  # 200 bytes, one every 50 ms: 10 s in all
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(200)
            self.send_header("Content-Length", "200")
            self.end_headers()
            try:
                for _ in range(200):
                    self.wfile.write(b" ")
                    self.wfile.flush()
                    time.sleep(0.05)
            except OSError:
                pass

        def log_message(self, *args) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Drip)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    monkeypatch.delenv(live_metrics.PUSHGATEWAY_ENV, raising=False)
    monkeypatch.setattr(live_metrics, "PUSH_TIMEOUT_S", 1.0)
    cfg = SimpleNamespace(name="tiny", train=SimpleNamespace(pushgateway=f"http://127.0.0.1:{httpd.server_address[1]}"))
    try:
        pushed = live_metrics.push_outcome(cfg, True, 3, 1.0)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert pushed is False
    assert "could not push the run's outcome" in caplog.text and "no complete answer within 1 s" in caplog.text
