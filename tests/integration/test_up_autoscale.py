"""`flotilla up --autoscale` as a user runs it: from zero engines the first request is held through a cold
start and then served; sustained load adds engines; idle time takes them away again (to zero).

The official openai client talks to a real subprocess; the engine count is read from the status line the
command prints on stderr and, after shutdown, from the scaler's ``--record``.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest

from tests.support import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

MODEL = "meta-llama/Llama-3.1-8B-Instruct"
TIME_SCALE = 0.1
COLD_START = 20.0  # simulated seconds = 2 s wall


class StatusReader:
    """Collects the status lines `flotilla up` prints on stderr (one per change when not a terminal)."""

    def __init__(self, stream) -> None:
        self.lines: list[str] = []
        self._stream = stream
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream) -> None:
        for line in stream:
            self.lines.append(line.rstrip("\n"))

    def join(self) -> None:
        self._thread.join(10)
        self._stream.close()

    def replicas(self) -> int | None:
        for line in reversed(self.lines):
            m = re.match(r"replicas (\d+)", line)
            if m:
                return int(m.group(1))
        return None

    def wait_for(self, predicate, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self.replicas()):
                return
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}; last lines: {self.lines[-5:]}")


def test_up_autoscale_from_zero_up_and_back_down(tmp_path: Path) -> None:
    port = free_port()
    record = tmp_path / "record.json"
    base_url = f"http://127.0.0.1:{port}/v1"
    proc = subprocess.Popen(
        [sys.executable, "-c", "from flotilla.cli import main; main()", "up", "--autoscale", "--port", str(port),
         "--min-engines", "0", "--max-engines", "3", "--startup-delay", str(COLD_START),
         "--time-scale", str(TIME_SCALE), "--record", str(record)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    status = StatusReader(proc.stderr)
    try:
        deadline = time.monotonic() + 60
        while True:  # the model is declared in the catalog before any engine exists
            assert proc.poll() is None, status.lines
            try:
                models = httpx.get(base_url + "/models", timeout=2.0).json()["data"]
                if any(m["id"] == MODEL for m in models):
                    break
            except (httpx.HTTPError, ValueError, KeyError):
                pass
            assert time.monotonic() < deadline, "flotilla up did not come up"
            time.sleep(0.2)
        status.wait_for(lambda n: n == 0, 10, "zero replicas at start")

        client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=60)
        started = time.monotonic()
        reply = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Wake up!"}], max_tokens=4
        )
        waited = time.monotonic() - started
        assert reply.choices[0].message.content
        # held at the gateway through the cold start, not refused
        assert waited >= COLD_START * TIME_SCALE * 0.9, waited
        status.wait_for(lambda n: n is not None and n >= 1, 10, "one replica after the first request")

        stop = threading.Event()

        def keep_busy() -> int:
            done = 0
            while not stop.is_set():
                r = client.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": f"Busy {done}"}], max_tokens=200,
                    extra_body={"ignore_eos": True},
                )  # fmt: skip
                assert r.usage is not None
                assert r.usage.completion_tokens == 200
                done += 1
            return done

        with ThreadPoolExecutor(24) as pool:
            futures = [pool.submit(keep_busy) for _ in range(24)]
            try:
                status.wait_for(lambda n: n is not None and n >= 2, 40, "scale-up under load")
            finally:
                stop.set()
            assert sum(f.result() for f in futures) > 0

        # idle: back down to zero after the stable window, the cooldown and the scale-to-zero grace
        status.wait_for(lambda n: n == 0, 60, "scale-down to zero when idle")
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
        status.join()
    assert proc.returncode == 0, status.lines[-10:]
    data = json.loads(record.read_text())
    engines = data["engines"]
    assert len(engines) >= 2
    assert all(e["stopped"] is not None for e in engines)
    cold = [e["ready"] - e["started"] for e in engines if e["ready"] is not None]
    assert min(cold) >= COLD_START * 0.9, cold  # every engine paid its cold start (simulated seconds)
    peak = max(row["ready"] for row in data["timeline"])
    assert 2 <= peak <= 3
