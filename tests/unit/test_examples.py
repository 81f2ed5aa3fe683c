"""The shipped examples are valid objects, and the quickstart script at least parses (the kind cluster test,
``make e2e-cluster``, runs it for real)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from flotilla.crds import ModelDeployment, ModelGroup

REPO = Path(__file__).parents[2]
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_model_deployments_validate(path: Path) -> None:
    for doc in yaml.safe_load_all(path.read_text()):
        if doc and doc.get("kind") == "ModelDeployment":
            md = ModelDeployment.model_validate(doc)
            if md.spec.engine.type == "simulator":  # the CRD's CEL rule, restated for a fast failure
                assert md.spec.resources.gpus == 0
        if doc and doc.get("kind") == "ModelGroup":
            group = ModelGroup.model_validate(doc)
            names = {d["metadata"]["name"] for d in yaml.safe_load_all(path.read_text()) if d}
            assert {m.name for m in group.spec.members} <= names  # members shipped in the same file


def test_quickstart_script_parses_and_uses_the_example() -> None:
    script = REPO / "hack" / "kind-quickstart.sh"
    subprocess.run(["bash", "-n", str(script)], check=True, timeout=10)
    assert "examples/simulated-model.yaml" in script.read_text()
