from __future__ import annotations

import gateway


def test_public_exports_are_pinned() -> None:
    assert sorted(gateway.__all__) == [
        "EndpointStats",
        "GatewaySettings",
        "GatewayStats",
        "ProfileConfig",
        "create_app",
        "live_stats",
    ]
    for name in gateway.__all__:
        assert getattr(gateway, name) is not None


def test_create_app_has_no_import_time_state() -> None:
    a = gateway.create_app(gateway.GatewaySettings(engines=["http://127.0.0.1:1"]))
    b = gateway.create_app(
        gateway.GatewaySettings(engines=["http://127.0.0.1:2"], default_profile="round-robin")
    )
    assert a.state.gateway is not b.state.gateway
    assert a.state.gateway.metrics.registry is not b.state.gateway.metrics.registry
    stats = gateway.live_stats(a)
    assert stats.requests == 0
    assert [e.key for e in stats.endpoints] == ["127.0.0.1:1"]
    schema = a.openapi()
    assert "ChatCompletionRequest" in schema["components"]["schemas"]
    body = schema["paths"]["/v1/chat/completions"]["post"]["requestBody"]
    assert body["content"]["application/json"]["schema"]["$ref"].endswith("/ChatCompletionRequest")
