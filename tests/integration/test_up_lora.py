"""``flotilla up --lora``: adapters placed on the simulated engines by the operator's placement code, served
through the gateway to the official openai client; checked on the engines' own /v1/models."""

from __future__ import annotations

import re
import signal
import subprocess
import time

import httpx
import openai
import pytest

from flotilla.cli.up_lora import LoraOption, parse_lora
from tests.integration.test_up import UP
from tests.support import free_port

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize(
    ("value", "want"),
    [("sql=org/sql", LoraOption("sql", "org/sql", 1)), ("sql=org/sql:3", LoraOption("sql", "org/sql", 3)),
     ("s=s3://bucket/key:2", LoraOption("s", "s3://bucket/key", 2)),
     ("f=file:///models/a", LoraOption("f", "file:///models/a", 1))],
    ids=["default-replicas", "replicas", "url-with-colon", "file-url"],
)  # fmt: skip
def test_parse_lora(value: str, want: LoraOption) -> None:
    assert parse_lora(value) == want


@pytest.mark.parametrize("value", ["sql", "=org/x", "sql=", "sql=org/x:0"])
def test_bad_lora_option_is_a_one_line_error(value: str) -> None:
    proc = subprocess.run([*UP, "--lora", value], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2
    assert "--lora" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_up_places_adapters_and_serves_them() -> None:
    port = free_port()
    base_url = f"http://127.0.0.1:{port}/v1"
    args = ["--port", str(port), "--engines", "3", "--preset", "zero", "--max-loras", "1",
            "--lora", "sql=org/sql:2", "--lora", "chat=org/chat", "--lora", "big=org/big:2", "--no-status"]  # fmt: skip
    proc = subprocess.Popen([*UP, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        with openai.OpenAI(
            base_url=base_url, api_key="unused", max_retries=0, timeout=10
        ) as client:  # closes its pool
            deadline = time.monotonic() + 60
            while True:
                assert proc.poll() is None, proc.communicate()
                try:
                    reply = client.chat.completions.create(
                        model="sql", messages=[{"role": "user", "content": "hi"}], max_tokens=2
                    )
                    break
                except (openai.APIError, httpx.HTTPError):
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.3)
        assert reply.model == "sql"
        cards = {c["id"]: c for c in httpx.get(base_url + "/models", timeout=5).json()["data"]}
        for name in ("sql", "chat", "big"):  # declared to the gateway's catalog with their base model
            assert cards[name].get("parent") == "meta-llama/Llama-3.1-8B-Instruct", cards
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    urls = {m.group(1): m.group(2) for m in re.finditer(r"^  (\w+): on ([^(\n]*?)\s*(?:\(|$)", out, re.M)}
    # 3 engines x 1 slot, 5 replicas wanted: every adapter gets its first replica before any gets a second,
    # the heavier-per-replica adapter (chat: 1 replica) first; one replica stays short, and the banner says so
    assert set(urls) == {"sql", "chat", "big"}, out
    assert len(urls["chat"].split(", ")) == 1
    assert len(urls["sql"].split(", ")) + len(urls["big"].split(", ")) == 2
    assert "replica(s) short: no free LoRA slot" in out
    engines = {u for v in urls.values() for u in v.split(", ")}
    assert len(engines) == 3
