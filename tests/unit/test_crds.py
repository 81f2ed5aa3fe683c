"""The API: generated CRDs match the committed ones, are structural, and the models validate as the CRDs do."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from flotilla.crds import (
    SOURCE_SCHEMES,
    LoRAAdapterSpec,
    ModelAutoscalerSpec,
    ModelDeploymentSpec,
    file_name,
    manifests,
    render,
)
from flotilla_operator.cli import all_manifests

CRD_DIR = Path(__file__).resolve().parents[2] / "charts" / "flotilla" / "crds"


def test_committed_crds_match_the_models() -> None:
    generated = {file_name(m): render(m) for m in all_manifests()}
    committed = {p.name: p.read_text() for p in CRD_DIR.glob("*.yaml")}
    assert sorted(committed) == sorted(generated), "run `make crds`"
    for name, text in generated.items():
        assert committed[name] == text, f"{name} is stale: run `make crds`"


def _walk(node: Any, path: str = "") -> list[str]:
    """Paths of schema nodes that break Kubernetes' structural-schema rules."""
    problems: list[str] = []
    if not isinstance(node, dict):
        return problems
    banned = ("$ref", "anyOf", "oneOf", "allOf", "$defs", "title", "const")
    problems.extend(f"{path}: {key}" for key in banned if key in node)
    typed = "type" in node or node.get("x-kubernetes-int-or-string")
    if not typed:
        problems.append(f"{path}: no type")
    if "properties" in node and "additionalProperties" in node:
        problems.append(f"{path}: properties + additionalProperties")
    for name, sub in (node.get("properties") or {}).items():
        problems += _walk(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        problems += _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        problems += _walk(node["additionalProperties"], f"{path}{{}}")
    return problems


@pytest.mark.parametrize("crd", manifests(), ids=lambda m: m["spec"]["names"]["kind"])
def test_schemas_are_structural_and_described(crd: dict[str, Any]) -> None:
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert _walk(schema) == []
    spec = schema["properties"]["spec"]
    undescribed = [name for name, sub in spec["properties"].items() if not sub.get("description")]
    assert undescribed == []


def test_model_deployment_crd_serves_scale_and_printer_columns() -> None:
    md = next(m for m in manifests() if m["spec"]["names"]["kind"] == "ModelDeployment")
    version = md["spec"]["versions"][0]
    assert version["subresources"]["scale"] == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }
    visible = [c["name"] for c in version["additionalPrinterColumns"] if not c.get("priority")]
    assert visible == ["Model", "Ready", "Replicas", "Age"]
    assert md["spec"]["names"]["shortNames"] == ["md"]


def test_omitted_sections_default_to_their_fields_defaults() -> None:
    md = next(m for m in manifests() if m["spec"]["names"]["kind"] == "ModelDeployment")
    engine = md["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"][
        "engine"
    ]
    assert engine["default"]["port"] == 8000
    assert engine["default"]["probes"]["path"] == "/health"


MD_CASES = [
    pytest.param({"model": "m"}, None, id="minimal"),
    pytest.param({"model": "m", "replicas": -1}, "replicas", id="negative-replicas"),
    pytest.param({"replicas": 1}, "model", id="missing-model"),
    pytest.param({"model": ""}, "model", id="empty-model"),
    pytest.param({"model": "m", "engine": {"blockSize": 12}}, "blockSize", id="block-size-not-allowed"),
    pytest.param({"model": "m", "routingProfile": "Not_DNS"}, "routingProfile", id="profile-not-dns"),
    pytest.param({"model": "m", "unknown": 1}, "unknown", id="unknown-field"),
    pytest.param({"model": "m", "resources": {"cpu": 4, "memory": "16Gi"}}, None, id="quantities"),
]


@pytest.mark.parametrize(("spec", "error_field"), MD_CASES)
def test_model_deployment_spec_validation(spec: dict[str, Any], error_field: str | None) -> None:
    if error_field is None:
        parsed = ModelDeploymentSpec.model_validate(spec)
        assert parsed.served_name == "m"
        return
    with pytest.raises(ValidationError, match=error_field):
        ModelDeploymentSpec.model_validate(spec)


@pytest.mark.parametrize("scheme", SOURCE_SCHEMES)
def test_adapter_sources_cel_rule_names_every_scheme(scheme: str) -> None:
    lora = next(m for m in manifests() if m["spec"]["names"]["kind"] == "LoRAAdapter")
    source = lora["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"][
        "source"
    ]
    rule = source["x-kubernetes-validations"][0]
    assert f"{scheme}://" in rule["message"]
    assert scheme in rule["rule"]
    LoRAAdapterSpec.model_validate({"baseModelDeployment": "llama", "source": f"{scheme}://x/y"})


def test_autoscaler_defaults() -> None:
    spec = ModelAutoscalerSpec.model_validate(
        {
            "scaleTargetRef": {"name": "llama"},
            "maxReplicas": 4,
            "metrics": [{"name": "kv_cache_usage", "target": 0.8}],
        }
    )
    assert (spec.algorithm, spec.min_replicas, spec.windows.stable_seconds) == ("KPA", 1, 180)
    with pytest.raises(ValidationError):
        ModelAutoscalerSpec.model_validate({"scaleTargetRef": {"name": "x"}, "maxReplicas": 4, "metrics": []})


def test_flotilla_crds_prints_every_manifest_and_writes_files(tmp_path: Path) -> None:
    import yaml
    from click.testing import CliRunner

    from flotilla.cli import cli

    printed = CliRunner().invoke(cli, ["crds"])
    assert printed.exit_code == 0, printed.output
    kinds = [doc["spec"]["names"]["kind"] for doc in yaml.safe_load_all(printed.output)]
    assert kinds == [
        "ModelDeployment", "LoRAAdapter", "ModelAutoscaler", "ModelGroup", "ClusterKopfPeering", "KopfPeering"
    ]  # fmt: skip
    written = CliRunner().invoke(cli, ["crds", "--output-dir", str(tmp_path)])
    assert written.exit_code == 0, written.output
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in CRD_DIR.glob("*.yaml"))


def test_model_group_refuses_inverted_bounds_and_defaults_the_rest() -> None:
    from flotilla.crds import ModelGroupSpec

    base = {
        "model": "llama",
        "slo": {"ttftSeconds": 5, "tpotSeconds": 0.1},
        "profiles": {"configMapName": "profiles"},
    }
    spec = ModelGroupSpec.model_validate({**base, "members": [{"name": "llama-l4", "maxReplicas": 3}]})
    assert (spec.members[0].min_replicas, spec.window_seconds, spec.slo.attainment) == (0, 300, 0.99)
    with pytest.raises(ValidationError, match="minReplicas must be <= maxReplicas"):
        ModelGroupSpec.model_validate(
            {**base, "members": [{"name": "a", "minReplicas": 3, "maxReplicas": 1}]}
        )
    with pytest.raises(ValidationError):
        ModelGroupSpec.model_validate({**base, "members": [{"name": "a"}], "prices": {"l4": 0}})
    with pytest.raises(ValidationError):
        ModelGroupSpec.model_validate({**base, "members": []})
