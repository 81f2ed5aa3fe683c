"""The operator against a real API server: what users see with kubectl."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from flotilla import labels
from tests.e2e.conftest import SIMULATOR_IMAGE, OperatorProcess
from tests.e2e.controlplane import REPO, ControlPlane
from tests.e2e.helpers import (
    conditions,
    diagnose,
    eventually,
    get,
    md_manifest,
    peering_priorities,
    wait_ready,
)
from tests.e2e.podsim import PodSimulator

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


def test_model_deployment_becomes_deployment_service_and_ready_pods(
    operator: OperatorProcess, cluster: ControlPlane, ns: str
) -> None:
    cluster.kubectl(
        "apply", "-f", "-",
        input=md_manifest(
            "llama", ns, servedModelName="llama-8b", replicas=2,
            lora={"enabled": True, "maxLoras": 2}, kvEvents={"enabled": True}, routingProfile="prefix",
        ),
    )  # fmt: skip
    md = wait_ready(cluster, "llama", ns, 2)
    assert conditions(md) == {"Available": "True", "Progressing": "True", "Degraded": "False"}
    assert md["status"]["selector"] == f"{labels.DEPLOYMENT}=llama,{labels.COMPONENT}=engine"

    dep = json.loads(
        cluster.kubectl("get", "deployment", "llama", "-n", ns, "-o", "json", "--show-managed-fields").stdout
    )
    owner = dep["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
        "ModelDeployment", "llama", md["metadata"]["uid"], True,
    )  # fmt: skip
    assert any(
        f["manager"] == "flotilla-operator" and f["operation"] == "Apply"
        for f in dep["metadata"]["managedFields"]
    )
    template = dep["spec"]["template"]
    assert template["metadata"]["labels"][labels.MODEL] == "llama-8b"
    assert template["metadata"]["annotations"][labels.ENGINE_PORT] == "8000"
    assert template["metadata"]["annotations"][labels.KV_EVENTS_PORT] == "5557"
    assert template["metadata"]["annotations"][labels.ROUTING_PROFILE] == "prefix"
    engine = template["spec"]["containers"][0]
    args = engine["args"]
    assert args[args.index("--served-model-name") + 1] == "llama-8b"
    assert args[args.index("--max-loras") + 1] == "2"
    assert json.loads(args[args.index("--kv-events-config") + 1])["endpoint"] == "tcp://*:5557"
    assert engine["readinessProbe"]["httpGet"]["path"] == "/health"

    svc = get(cluster, "service", "llama", ns)
    assert svc is not None
    assert svc["spec"]["selector"] == {labels.DEPLOYMENT: "llama", labels.COMPONENT: "engine"}
    assert svc["spec"]["ports"][0]["port"] == 8000

    pods = json.loads(
        cluster.kubectl("get", "pods", "-n", ns, "-l", f"{labels.DEPLOYMENT}=llama", "-o", "json").stdout
    )
    assert [p["status"]["phase"] for p in pods["items"]] == ["Running", "Running"]
    assert all(p["status"]["podIP"].startswith(cluster.pod_prefix) for p in pods["items"])

    table = cluster.kubectl("get", "md", "-n", ns).stdout.splitlines()
    assert table[0].split() == ["NAME", "MODEL", "READY", "REPLICAS", "AGE"]
    assert table[1].split()[:4] == ["llama", "meta-llama/Llama-3.1-8B-Instruct", "2", "2"]

    events = cluster.kubectl("get", "events", "-n", ns, "--field-selector", "involvedObject.kind=ModelDeployment",
                             "-o", "json").stdout  # fmt: skip
    assert "Created" in {e["reason"] for e in json.loads(events)["items"]}


def test_simulator_engines_run_flotilla_sim_serve_with_the_vllm_args(
    operator: OperatorProcess, cluster: ControlPlane, ns: str
) -> None:
    cluster.kubectl(
        "apply", "-f", "-",
        input=md_manifest(
            "sim", ns, servedModelName="sim-8b", replicas=1, kvEvents={"enabled": True},
            engine={"type": "simulator", "maxModelLen": 4096, "simulator": {"preset": "zero"}},
        ),
    )  # fmt: skip
    wait_ready(cluster, "sim", ns, 1)
    pods = json.loads(
        cluster.kubectl("get", "pods", "-n", ns, "-l", f"{labels.DEPLOYMENT}=sim", "-o", "json").stdout
    )["items"]
    (engine,) = pods[0]["spec"]["containers"]  # the pod the Deployment controller made, not our manifest
    assert engine["image"] == SIMULATOR_IMAGE
    assert engine["command"] == ["flotilla", "sim", "serve", "--sim-preset=zero"]
    args = engine["args"]
    assert args[:6] == ["--model", "meta-llama/Llama-3.1-8B-Instruct", "--served-model-name", "sim-8b",
                        "--port", "8000"]  # fmt: skip
    assert args[args.index("--max-model-len") + 1] == "4096"
    assert json.loads(args[args.index("--kv-events-config") + 1])["endpoint"] == "tcp://*:5557"
    assert "resources" not in engine or not engine["resources"]
    assert engine["readinessProbe"]["httpGet"]["path"] == "/health"
    assert engine["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert pods[0]["spec"]["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "simulator" in cluster.kubectl("get", "md", "sim", "-n", ns, "-o", "wide").stdout.split()

    # an explicit image wins over the operator's
    cluster.kubectl(
        "patch", "md", "sim", "-n", ns, "--type=merge", "-p", '{"spec":{"engine":{"image":"mine:1"}}}'
    )

    def image() -> str | None:
        dep = get(cluster, "deployment", "sim", ns) or {}
        found = (
            dep.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [{}])[0].get("image")
        )
        return found if found == "mine:1" else None

    eventually(image, 60, "engine.image applied")


def test_the_simulated_model_example_is_admitted_and_becomes_ready(
    operator: OperatorProcess, cluster: ControlPlane, ns: str
) -> None:
    """examples/simulated-model.yaml, as docs/kind.md and hack/kind-quickstart.sh apply it (pods restricted)."""
    cluster.kubectl("label", "namespace", ns, "pod-security.kubernetes.io/enforce=restricted")
    cluster.kubectl("apply", "-n", ns, "-f", str(REPO / "examples" / "simulated-model.yaml"))
    md = wait_ready(cluster, "sim-llama", ns, 2)
    assert md["status"]["servedModelName"] == "llama"


def test_scale_subresource_drives_the_deployment(
    operator: OperatorProcess, cluster: ControlPlane, ns: str
) -> None:
    cluster.kubectl("apply", "-f", "-", input=md_manifest("scaled", ns, replicas=1))
    wait_ready(cluster, "scaled", ns, 1)
    cluster.kubectl("scale", "md/scaled", "-n", ns, "--replicas=3")
    wait_ready(cluster, "scaled", ns, 3)
    dep = get(cluster, "deployment", "scaled", ns)
    assert dep is not None
    assert dep["spec"]["replicas"] == 3
    scale = json.loads(
        cluster.kubectl("get", "md", "scaled", "-n", ns, "--subresource=scale", "-o", "json").stdout
    )
    assert (scale["spec"]["replicas"], scale["status"]["replicas"]) == (3, 3)
    assert scale["status"]["selector"] == f"{labels.DEPLOYMENT}=scaled,{labels.COMPONENT}=engine"


def test_deleted_and_edited_children_are_restored(
    operator: OperatorProcess, cluster: ControlPlane, ns: str
) -> None:
    cluster.kubectl("apply", "-f", "-", input=md_manifest("drift", ns, replicas=1))
    wait_ready(cluster, "drift", ns, 1)
    dep = get(cluster, "deployment", "drift", ns)
    assert dep is not None
    old_uid = dep["metadata"]["uid"]

    cluster.kubectl("delete", "deployment", "drift", "-n", ns)
    restored = eventually(lambda: (d := get(cluster, "deployment", "drift", ns)) and d["metadata"]["uid"] != old_uid
                          and d, 60, "deployment recreated")  # fmt: skip
    assert restored["spec"]["replicas"] == 1

    cluster.kubectl("patch", "deployment", "drift", "-n", ns, "--type=merge", "-p", '{"spec":{"replicas":4}}')
    eventually(lambda: (d := get(cluster, "deployment", "drift", ns)) and d["spec"]["replicas"] == 1, 60,
               "replicas edit reverted")  # fmt: skip

    cluster.kubectl("delete", "service", "drift", "-n", ns)
    eventually(lambda: get(cluster, "service", "drift", ns), 60, "service recreated")
    try:
        wait_ready(cluster, "drift", ns, 1)
    except AssertionError as exc:  # what the MD, its Deployment and the operator saw, for the CI log
        raise AssertionError(f"{exc}\n{diagnose(cluster, 'drift', ns)}\n--- operator log (tail) ---\n"
                             f"{operator.output()[-8000:]}") from exc  # fmt: skip
    reasons = {
        e["reason"]
        for e in json.loads(cluster.kubectl("get", "events", "-n", ns, "-o", "json").stdout)["items"]
    }
    assert {"Restored", "DriftCorrected"} <= reasons


def test_engines_are_reachable_only_by_the_gateway_and_operator(
    operator: OperatorProcess, cluster: ControlPlane, ns: str
) -> None:
    cluster.kubectl(
        "apply", "-f", "-", input=md_manifest("fenced", ns, replicas=0, kvEvents={"enabled": True})
    )
    policy = eventually(lambda: get(cluster, "networkpolicy", "fenced", ns), 60, "network policy created")
    assert policy["spec"]["podSelector"]["matchLabels"][labels.DEPLOYMENT] == "fenced"
    (rule,) = policy["spec"]["ingress"]
    assert sorted(p["port"] for p in rule["ports"]) == [5557, 8000]
    assert rule["from"][0]["podSelector"]["matchExpressions"][0]["values"] == ["gateway", "operator"]
    cluster.kubectl("delete", "networkpolicy", "fenced", "-n", ns)
    eventually(lambda: get(cluster, "networkpolicy", "fenced", ns), 60, "deleted policy restored")
    cluster.kubectl(
        "patch",
        "md",
        "fenced",
        "-n",
        ns,
        "--type=merge",
        "-p",
        '{"spec":{"networkPolicy":{"enabled":false}}}',
    )
    eventually(
        lambda: get(cluster, "networkpolicy", "fenced", ns) is None, 60, "policy removed when switched off"
    )


def test_deleting_the_model_deployment_collects_its_children(
    operator: OperatorProcess, cluster: ControlPlane, ns: str
) -> None:
    cluster.kubectl("apply", "-f", "-", input=md_manifest("gone", ns, replicas=1))
    wait_ready(cluster, "gone", ns, 1)
    cluster.kubectl("delete", "md", "gone", "-n", ns)
    # the garbage collector learns new CRD kinds on its discovery resync: allow for its lag
    eventually(lambda: get(cluster, "deployment", "gone", ns) is None and get(cluster, "service", "gone", ns) is None,
               120, "children garbage-collected")  # fmt: skip


def test_restarted_operator_changes_nothing(
    operator: OperatorProcess, cluster: ControlPlane, ns: str
) -> None:
    cluster.kubectl("apply", "-f", "-", input=md_manifest("steady", ns, replicas=2))
    wait_ready(cluster, "steady", ns, 2)
    time.sleep(2)  # let the last status mirror settle

    def versions() -> tuple[Any, ...]:
        md, dep, svc = (get(cluster, k, "steady", ns) for k in ("md", "deployment", "service"))
        assert md
        assert dep
        assert svc
        return (md["metadata"]["generation"], md["status"], dep["metadata"]["resourceVersion"],
                dep["metadata"]["generation"], svc["metadata"]["resourceVersion"])  # fmt: skip

    before = versions()
    operator.stop()
    log_size = len(operator.output())
    operator.start()
    eventually(lambda: "Handler 'reconcile' succeeded" in operator.output()[log_size:], 60, "resume handled")
    time.sleep(3)
    assert versions() == before


def test_unrealisable_spec_is_reported_as_degraded(
    operator: OperatorProcess, cluster: ControlPlane, ns: str
) -> None:
    cluster.kubectl(
        "apply", "-f", "-",
        input=md_manifest("bad", ns, podTemplate={"metadata": {"labels": {labels.MODEL: "hijack"}}}),
    )  # fmt: skip

    def degraded() -> dict[str, Any] | None:
        md = get(cluster, "md", "bad", ns)
        conds = {c["type"]: c for c in ((md or {}).get("status") or {}).get("conditions") or []}
        return conds.get("Degraded") if conds.get("Degraded", {}).get("status") == "True" else None

    cond = eventually(degraded, 60, "Degraded=True")
    assert cond["reason"] == "InvalidSpec"
    assert labels.MODEL in cond["message"]
    assert get(cluster, "deployment", "bad", ns) is None
    events = json.loads(cluster.kubectl("get", "events", "-n", ns, "-o", "json").stdout)["items"]
    assert any(e["reason"] == "InvalidSpec" and e["type"] == "Warning" for e in events)


INVALID = [
    pytest.param(
        md_manifest("neg", "default", replicas=-1), "spec.replicas: Invalid value: -1", id="negative-replicas"
    ),
    pytest.param(
        yaml.safe_dump(
            {
                "apiVersion": "flotilla.dev/v1alpha1",
                "kind": "ModelDeployment",
                "metadata": {"name": "nomodel", "namespace": "default"},
                "spec": {"replicas": 1},
            }
        ),
        "spec.model: Required value",
        id="missing-model",
    ),
    pytest.param(
        md_manifest("kvport", "default", kvEvents={"enabled": True, "port": 8000}),
        "kvEvents.port must differ from engine.port",
        id="kv-port-collides",
    ),
    pytest.param(
        md_manifest("tp", "default", resources={"gpus": 2}, engine={"tensorParallelSize": 4}),
        "engine.tensorParallelSize cannot exceed resources.gpus",
        id="tp-exceeds-gpus",
    ),
    pytest.param(
        md_manifest("simgpu", "default", resources={"gpus": 1}, engine={"type": "simulator"}),
        "engine.type simulator uses no GPU: set resources.gpus to 0",
        id="simulator-with-gpu",
    ),
    pytest.param(
        md_manifest("simtype", "default", engine={"type": "sglang"}),
        'spec.engine.type: Unsupported value: "sglang"',
        id="unknown-engine-type",
    ),
    pytest.param(
        yaml.safe_dump(
            {
                "apiVersion": "flotilla.dev/v1alpha1",
                "kind": "LoRAAdapter",
                "metadata": {"name": "ftp", "namespace": "default"},
                "spec": {"baseModelDeployment": "llama", "source": "ftp://example/adapter"},
            }
        ),
        "source must be a URL with one of the schemes hf://",
        id="bad-url-scheme",
    ),
    pytest.param(
        yaml.safe_dump(
            {
                "apiVersion": "flotilla.dev/v1alpha1",
                "kind": "ModelAutoscaler",
                "metadata": {"name": "minmax", "namespace": "default"},
                "spec": {
                    "scaleTargetRef": {"name": "llama"},
                    "minReplicas": 5,
                    "maxReplicas": 2,
                    "metrics": [{"name": "num_requests_waiting", "target": 4}],
                },
            }
        ),
        "minReplicas must be <= maxReplicas",
        id="autoscaler-min-above-max",
    ),
]


@pytest.mark.parametrize(("manifest", "message"), INVALID)
def test_invalid_objects_are_rejected_by_the_api_server(
    crds: ControlPlane, manifest: str, message: str
) -> None:
    proc = crds.kubectl("apply", "-f", "-", input=manifest, check=False)
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr


def test_valid_adapter_and_autoscaler_are_accepted_with_defaults(crds: ControlPlane, ns: str) -> None:
    crds.kubectl("apply", "-f", "-", input=yaml.safe_dump_all([
        {"apiVersion": "flotilla.dev/v1alpha1", "kind": "LoRAAdapter", "metadata": {"name": "sql", "namespace": ns},
         "spec": {"baseModelDeployment": "llama", "source": "hf://org/sql-lora"}},
        {"apiVersion": "flotilla.dev/v1alpha1", "kind": "ModelAutoscaler", "metadata": {"name": "as", "namespace": ns},
         "spec": {"scaleTargetRef": {"name": "llama"}, "maxReplicas": 4,
                  "metrics": [{"name": "num_requests_waiting", "target": 4}]}},
    ]))  # fmt: skip
    lora, mas = get(crds, "lora", "sql", ns), get(crds, "mas", "as", ns)
    assert lora is not None
    assert lora["spec"]["placement"] == {"policy": "LeastLoaded", "weight": 1}
    assert mas is not None
    assert mas["spec"]["algorithm"] == "KPA"
    assert mas["spec"]["minReplicas"] == 1
    assert mas["spec"]["windows"] == {"stableSeconds": 180, "panicSeconds": 60}
    assert mas["spec"]["scaleTargetRef"]["kind"] == "ModelDeployment"
    explain = crds.kubectl("explain", "modeldeployment.spec.kvEvents").stdout
    assert "vLLM KV-cache events" in explain


def test_a_second_replica_stands_by_and_takes_over(
    operator: OperatorProcess, cluster: ControlPlane, ns: str, tmp_path: Path
) -> None:
    standby = OperatorProcess(cluster, tmp_path / "standby.log", "--priority", "10")
    standby.start()
    try:
        eventually(
            lambda: peering_priorities(cluster) == [10, 100], 60, "both replicas in the peering object"
        )
        cluster.kubectl("apply", "-f", "-", input=md_manifest("peer", ns, replicas=1))
        wait_ready(cluster, "peer", ns, 1)
        time.sleep(2)
        assert "Handler 'reconcile' succeeded" not in standby.output()  # it stood by
        events = json.loads(cluster.kubectl("get", "events", "-n", ns, "-o", "json").stdout)["items"]
        assert [e["reason"] for e in events if e["involvedObject"]["kind"] == "ModelDeployment"] == [
            "Created"
        ]

        operator.stop()  # a graceful exit removes its peering entry: the standby resumes
        cluster.kubectl("apply", "-f", "-", input=md_manifest("failover", ns, replicas=1))
        wait_ready(cluster, "failover", ns, 1)
        assert "Handler 'reconcile' succeeded" in standby.output()
    finally:
        standby.stop()
        if operator.proc is None:
            operator.start()


def test_simulated_pods_answer_on_their_pod_ips(
    operator: OperatorProcess, pod_sims: PodSimulator, cluster: ControlPlane, ns: str
) -> None:
    cluster.kubectl("apply", "-f", "-", input=md_manifest("sim", ns, servedModelName="sim-8b", replicas=2))
    wait_ready(cluster, "sim", ns, 2)
    pods = json.loads(
        cluster.kubectl("get", "pods", "-n", ns, "-l", f"{labels.DEPLOYMENT}=sim", "-o", "json").stdout
    )
    ips = sorted(p["status"]["podIP"] for p in pods["items"])
    assert len(ips) == 2
    assert all(ip.startswith(cluster.pod_prefix) for ip in ips)

    def serving() -> list[str]:
        return sorted(ip for ip, port, model in pod_sims.endpoints() if ip in ips and port == 8000)

    eventually(lambda: serving() == ips, 60, "a simulator per pod")
    for ip in ips:
        body = eventually(lambda ip=ip: _models(ip), 60, f"GET http://{ip}:8000/v1/models")
        assert [m["id"] for m in body["data"]] == ["sim-8b"]

    cluster.kubectl("scale", "md/sim", "-n", ns, "--replicas=1")
    eventually(lambda: len(serving()) == 1, 60, "simulator of the removed pod stopped")
    assert not pod_sims.errors, pod_sims.errors


def _models(ip: str) -> dict[str, Any] | None:
    try:
        response = httpx.get(f"http://{ip}:8000/v1/models", timeout=5)
    except httpx.HTTPError:
        return None
    return response.json() if response.status_code == 200 else None
