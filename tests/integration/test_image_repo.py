"""A vm payload resolved through Loam's image repository, as Golem's clients resolve one, and run by a provider."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.integration.harness import Testnet, free_port, wait_for
from tests.integration.test_activity import _agreement, activity

pytestmark = pytest.mark.integration


def test_an_image_found_by_tag_in_the_repository_runs_in_a_vm_activity(testnet: Testnet, tmp_path: Path) -> None:
    from tests.images.support import build_images, engine, sha3_224

    engine()
    images = build_images()
    folder = tmp_path / "images"
    folder.mkdir()
    shutil.copy(images / "busybox.gvmi", folder / "busybox.gvmi")
    port = free_port()
    repo = subprocess.Popen(
        [sys.executable, "-m", "node.cli", "image-repo", "--dir", str(folder), "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"

        def info() -> dict[str, object] | None:
            try:
                with urllib.request.urlopen(f"{base}/v1/image/info?tag=busybox&count=true", timeout=5) as r:
                    return json.loads(r.read())
            except OSError:
                return None

        found = wait_for("the image repository", info, 20)
        assert found["sha3"] == sha3_224(folder / "busybox.gvmi")
        # What yapapi's vm.repo() puts in the demand: hash:sha3:<sha3>:<http link from the repository>.
        package = f"hash:sha3:{found['sha3']}:{found['http']}"
        provider = testnet.add("vm-provider", env={"LOAM_PROVIDER__ENABLED": "true", "LOAM_PROVIDER__RUNTIME": "vm"})
        requestor = testnet.add("requestor")
        agreement_id = _agreement(requestor, provider, package, runtime="vm")
        activity_id = activity(requestor, "create", agreement_id=agreement_id)["activity_id"]
        script = [{"deploy": {}}, {"start": {}}, {"run": {"entry_point": "/bin/sh", "args": ["-c", "echo $LOAM_TEST_IMAGE"]}}]
        batch = activity(requestor, "exec", activity_id=activity_id, script=script)
        results = activity(requestor, "results", activity_id=activity_id, batch_id=batch, timeout_s=90)
        assert [r["result"] for r in results] == ["Ok"] * 3, [r["message"] for r in results]
        assert results[2]["stdout"].strip() == "busybox"  # the image the repository served
        activity(requestor, "destroy", activity_id=activity_id)
    finally:
        repo.terminate()
        repo.wait(10)
