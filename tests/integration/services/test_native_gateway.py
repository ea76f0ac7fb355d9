"""A C worker hosted by a real WorkManager process calls the real gateway through
``gateway_call`` and gets the backend's JSON answer, or a gRPC status code and message."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from svc_cluster import API_KEY, REPO, Cluster, echo_topics, group_name

from virtufin.client import AsyncClient
from virtufin.envelope import Envelope
from virtufin.proto import ensure_built
from virtufin.runtime.constants import MIME_NATIVE

ensure_built()
from virtufin.proto.gen import workmanager_pb2  # noqa: E402

pytestmark = [pytest.mark.nats, pytest.mark.slow]

PROBE = REPO / "tests" / "integration" / "runtime" / "cworkers" / "probe.c"


@pytest.fixture(scope="module")
def probe_library(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The probe C worker built with gcc (its bytes: the worker is created from content)."""
    out = tmp_path_factory.mktemp("probe") / "libprobe.so"
    subprocess.run(
        ["gcc", "-O2", "-fPIC", "-shared", "-Wall", "-Werror", "-fvisibility=hidden",
         f"-I{REPO / 'native' / 'include'}", "-o", str(out), str(PROBE)],
        check=True,
        timeout=60,
    )  # fmt: skip
    return Path(out).read_bytes()


def _call(service: str, method: str, request: dict[str, Any] | None = None) -> Envelope:
    data: dict[str, Any] = {"op": "call", "service": service, "method": method}
    if request is not None:
        data["request"] = request
    return Envelope.new(type="com.virtufin.probe.call", source="urn:com.virtufin.itest", data=data)


async def test_a_native_worker_calls_the_gateway_and_gets_answers_and_status_codes(
    running: Cluster, probe_library: bytes
) -> None:
    worker_id = f"probe-{group_name('native')[-12:]}".lower()
    requests, replies = echo_topics("native-gateway")
    async with AsyncClient(running.gateway_address, api_key=API_KEY) as client:
        created = await client.workmanager.create_worker(
            workmanager_pb2.CreateWorkerRequest(
                id=worker_id,
                code_source=workmanager_pb2.CodeSource(content=probe_library),
                mime_type=MIME_NATIVE,
                topic=requests,
                group=group_name("native"),
                start=True,
            )
        )
        assert created.status == workmanager_pb2.WORKER_STATUS_RUNNING

        async def ask(event: Envelope) -> dict[str, Any]:
            reply = await client.publish_with_result(
                requests, event, reply_topic=replies, timeout=15
            )
            assert reply.type == "probe.call"
            assert isinstance(reply.data, dict)
            return reply.data

        try:
            # Answered: the WorkManager (the worker's own host) lists the worker itself.
            listed = await ask(_call("workmanager", "ListWorkers", {}))
            assert listed["rc"] == 0
            assert worker_id in [w["id"] for w in listed["response"]["workers"]]
            # The backend refuses: its status comes back in-band.
            missing = await ask(_call("workmanager", "StartWorker", {"id": "no-such-worker"}))
            assert missing["rc"] == 5
            assert missing["response"]["status"] == "NOT_FOUND"
            assert "no-such-worker" in missing["response"]["message"]
            # The gateway refuses: no such backend, a request that does not fit the method.
            unknown = await ask(_call("nosuch", "Method", {}))
            assert unknown["rc"] == 5
            assert "no backend service 'nosuch'" in unknown["response"]["message"]
            garbage = await ask(_call("workmanager", "ListWorkers", {"nofield": {}}))
            assert garbage["rc"] == 3
            assert garbage["response"]["status"] == "INVALID_ARGUMENT"
            assert "nofield" in garbage["response"]["message"]
            # The worker survived every failure and still answers.
            again = await ask(_call("workmanager", "ListWorkers", {}))
            assert again["rc"] == 0
        finally:
            await client.workmanager.stop_worker(worker_id)
            assert await client.workmanager.delete_worker(worker_id)
