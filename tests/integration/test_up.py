"""`flotilla up` as a user runs it: a subprocess on a free loopback port, used through the official openai client,
then stopped with Ctrl-C (SIGINT) or SIGTERM — and it must exit cleanly."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest

from tests.support import free_port, wait_for_port

pytestmark = pytest.mark.timeout(120)

UP = [sys.executable, "-c", "from flotilla.cli import main; main()", "up"]
MODEL = "meta-llama/Llama-3.1-8B-Instruct"


def _wait_ready(proc: subprocess.Popen[str], base_url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            data = httpx.get(base_url + "/models", timeout=2.0).json()["data"]
            if data:
                return
        except (httpx.HTTPError, ValueError, KeyError):
            pass
        time.sleep(0.2)
    raise TimeoutError(f"flotilla up did not serve {base_url}/models within {timeout}s")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_up_serves_openai_and_stops_cleanly(sig: signal.Signals) -> None:
    _use_and_stop(["--engines", "2", "--preset", "zero"], sig)


def test_up_with_external_engines_and_shared_redis_index(redis_url: str) -> None:
    """``--engine URL`` puts the gateway in front of engines someone else runs; ``--redis-url`` shares the index."""
    port = free_port()
    engine = subprocess.Popen(
        [sys.executable, "-c", "from flotilla.cli import main; main()", "sim", "--engines", "1", "--port",
         str(port), "--preset", "zero"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for_port("127.0.0.1", port, timeout=60)
        out = _use_and_stop(["--engine", f"http://127.0.0.1:{port}", "--redis-url", redis_url], signal.SIGINT)
        assert f"gateway in front of 1 engine(s) at http://127.0.0.1:{port}" in out
    finally:
        engine.terminate()
        engine.wait(30)


def test_up_with_the_models_own_tokenizer(tmp_path: Path) -> None:
    """``--tokenizer DIR`` gives the simulated engines and the gateway the model's tokenizer.json and chat
    template: the engine counts the prompt exactly as the files do (not the synthetic tokenizer), and the same
    long system prompt sent twice is served from the prefix cache the second time."""
    from flotilla.tokenizer import load_tokenizer
    from flotilla.tokenizer_files import write_llama3

    directory = write_llama3(tmp_path / "llama3")
    messages = [
        {"role": "system", "content": "You answer in one line. " * 40},
        {"role": "user", "content": "Hi"},
    ]
    expected = len(load_tokenizer(str(directory)).encode_chat(messages))
    port = free_port()
    base_url = f"http://127.0.0.1:{port}/v1"
    proc = subprocess.Popen([*UP, "--port", str(port), "--engines", "2", "--preset", "zero", "--tokenizer",
                             str(directory), "--no-status"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    try:
        _wait_ready(proc, base_url)
        with openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0) as client:
            usages = [
                client.chat.completions.create(model=MODEL, messages=messages, max_tokens=4).usage  # type: ignore[arg-type]
                for _ in range(2)
            ]
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    first, second = usages
    assert first is not None
    assert second is not None
    assert first.prompt_tokens == second.prompt_tokens == expected
    assert second.prompt_tokens_details is not None
    assert (second.prompt_tokens_details.cached_tokens or 0) >= expected - 16  # all full blocks but the last


def _use_and_stop(args: list[str], sig: signal.Signals) -> str:
    port = free_port()
    base_url = f"http://127.0.0.1:{port}/v1"
    proc = subprocess.Popen([*UP, "--port", str(port), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    try:
        _wait_ready(proc, base_url)
        with openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0) as client:  # closes its pool
            reply = client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "Hello, Flotilla!"}], max_tokens=8
            )
            assert reply.choices[0].message.content
            assert reply.usage is not None
            assert reply.usage.completion_tokens == 8 or reply.choices[0].finish_reason == "stop"
            stream = client.chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": "Stream, please."}],
                max_tokens=5,
                stream=True,
            )
            text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
            assert text
            models = [m.id for m in client.models.list()]
            assert MODEL in models
    finally:
        proc.send_signal(sig)
        try:
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail(f"flotilla up did not stop within 30 s after {sig.name}:\n{err}")
    assert proc.returncode == 0, err
    assert f"OpenAI base URL:  {base_url}" in out
    assert "from openai import OpenAI" in out
    assert f"curl {base_url}/chat/completions" in out
    assert "stopped" in err
    assert "Traceback" not in err
    return out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--engines", "0"], "Invalid value for '--engines'"),
        (["--engine", "not-a-url"], "is not an http(s) URL"),
        (["--redis-url", "http://x"], "is not a redis:// URL"),
        (["--preset", "tpu-v9"], "choose from"),
        (["--tokenizer", "/nonexistent/tokenizer.json"], "tokenizer file not found"),
        (["--chat-template", "{{ messages }}"], "--chat-template needs --tokenizer"),
    ],
    ids=[
        "zero-engines",
        "bad-engine-url",
        "bad-redis-url",
        "bad-preset",
        "missing-tokenizer",
        "template-alone",
    ],
)
def test_bad_options_are_one_line_errors(args: list[str], message: str) -> None:
    proc = subprocess.run([*UP, *args], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_port_in_use_is_a_one_line_error() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        proc = subprocess.run([*UP, "--port", str(port), "--preset", "zero", "--engines", "1"],
                              capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert proc.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in proc.stderr
    assert "Traceback" not in proc.stderr
