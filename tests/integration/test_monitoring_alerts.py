"""The alert webhook against a real HTTP receiver on loopback: delivered as JSON, failures logged not raised."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from typing import ClassVar

import pytest
from structlog.testing import capture_logs

from fraud_detection.monitoring.alerts import Alert, AlertSettings, publish_alerts

pytestmark = pytest.mark.integration


class _Receiver(http.server.BaseHTTPRequestHandler):
    received: ClassVar[list[dict]] = []
    status = 200
    delay_s = 0.0

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append({"content_type": self.headers["Content-Type"], "body": json.loads(body)})
        time.sleep(type(self).delay_s)
        self.send_response(type(self).status)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, type[_Receiver]]]:
    handler = type("Receiver", (_Receiver,), {"received": [], "status": 200, "delay_s": 0.0})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", handler
    finally:
        server.shutdown()
        server.server_close()


ALERTS = [
    Alert(name="data_drift", severity="warning", summary="3 of 10 columns drifted", details={"share": 0.3}),
    Alert(name="performance_degraded", severity="critical", summary="AP fell 40 %"),
]


def test_each_alert_is_posted_as_json(receiver):
    url, handler = receiver
    result = publish_alerts(ALERTS, settings=AlertSettings(webhook_url=url))
    assert result.webhook_sent == 2 and result.webhook_failures == []
    assert [item["body"]["alert"]["name"] for item in handler.received] == [
        "data_drift",
        "performance_degraded",
    ]
    assert handler.received[0]["content_type"] == "application/json"
    assert handler.received[0]["body"]["alert"]["details"] == {"share": 0.3}


def test_a_failing_receiver_is_logged_not_raised(receiver):
    url, handler = receiver
    handler.status = 500
    with capture_logs() as logs:
        result = publish_alerts(ALERTS[:1], settings=AlertSettings(webhook_url=url))
    assert result.webhook_sent == 0 and result.webhook_failures == [
        "data_drift: HTTP 500 Internal Server Error"
    ]
    assert any(line["event"] == "alert webhook failed" for line in logs)


def test_a_slow_receiver_times_out(receiver):
    url, handler = receiver
    handler.delay_s = 2.0
    started = time.monotonic()
    result = publish_alerts(ALERTS[:1], settings=AlertSettings(webhook_url=url, webhook_timeout_s=0.3))
    assert time.monotonic() - started < 1.8
    assert result.webhook_sent == 0 and "timed out" in result.webhook_failures[0].lower()


def test_an_unreachable_receiver_is_logged_not_raised():
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = publish_alerts(ALERTS[:1], settings=AlertSettings(webhook_url=f"http://127.0.0.1:{port}/hook"))
    assert result.webhook_sent == 0 and len(result.webhook_failures) == 1
