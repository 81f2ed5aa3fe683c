"""hack/kind-quickstart.sh, the users' first steps (docs/kind.md), run as written against this session's kind
cluster: only what this machine cannot do is switched through the script's own knobs (no `docker build` from the
public base: the image under test is used; the chart's Redis image is the local one; one replica each of the
operator and the gateway, for CPU). Runs after
test_chart_in_kind.py has uninstalled its release, so the quickstart meets a cluster without Flotilla, as a
user's does."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.e2e_cluster.kind import HACK, KindCluster
from tests.support import free_port

pytestmark = [pytest.mark.e2e_cluster, pytest.mark.timeout(600)]

NAMESPACE, RELEASE = "flotilla-system", "flotilla"


def test_quickstart_script_serves_a_chat_completion(
    kind_cluster: KindCluster, flotilla_image: str, redis_image: str
) -> None:
    redis_repository, redis_tag = redis_image.rsplit(":", 1)
    # one operator and one gateway (so no Redis): the chart's default requests (2x100m + 2x250m + 50m) with the
    # example's two 250m engines and the control plane's ~1 CPU do not fit this 2-CPU node
    extra = (
        f"--set redis.image.repository={redis_repository} --set-string redis.image.tag={redis_tag}"
        " --set operator.replicas=1 --set gateway.replicas=1"
    )
    if os.environ.get("FLOTILLA_E2E_HELM_ARGS"):
        extra += " " + os.environ["FLOTILLA_E2E_HELM_ARGS"]
    env = {
        **kind_cluster.env(),
        "KIND_CLUSTER": kind_cluster.name,  # exists: the script uses it
        "IMAGE": flotilla_image,
        "BUILD_IMAGE": "0",
        "HELM_EXTRA_ARGS": extra,
        "KIND": str(kind_cluster.bin_dir / "kind"),
        "KUBECTL": str(kind_cluster.bin_dir / "kubectl"),
        "HELM": str(kind_cluster.bin_dir / "helm"),
        "LOCAL_PORT": str(free_port()),
        "TIMEOUT": "180s",
    }
    try:
        proc = subprocess.run(
            ["bash", str(HACK / "kind-quickstart.sh")], capture_output=True, text=True, env=env, timeout=540,
            check=False,
        )  # fmt: skip
        assert proc.returncode == 0, (
            f"kind-quickstart.sh -> {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
        # its last request's answer, as the user sees it
        answer = json.loads(proc.stdout.split("==> 5/5", 1)[1].splitlines()[1])
        assert answer["object"] == "chat.completion"
        assert answer["choices"][0]["message"]["content"]
    finally:
        kind_cluster.kubectl(
            "delete", "modeldeployments", "--all", "-n", NAMESPACE, "--wait", timeout=180, check=False
        )
        kind_cluster.helm("uninstall", RELEASE, "-n", NAMESPACE, "--wait", timeout=180, check=False)
