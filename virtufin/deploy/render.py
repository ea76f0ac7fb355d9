"""Render, write and drift-check every deploy file derived from services.json + versions.env.

The rendered tree (paths relative to the output root)::

    infra/k8s/kustomization.yaml          lists every file below it, `kubectl apply -k`
    infra/k8s/namespace.yaml
    infra/k8s/configmap-services.yaml     services.json, verbatim
    infra/k8s/brokers/                    single-node NATS (JetStream) and Redis
    infra/k8s/dapr/                       cluster Dapr components + resiliency
    infra/k8s/nats-streams-*.yaml         stream definitions + the Job that creates them
    infra/k8s/services/<service>-*.yaml   Deployment + Service per service
    infra/dapr/components/                local Dapr components + resiliency (`dapr run -f`)
    infra/dapr/alternatives/              pubsub.redis and state.postgresql (v2), same names
    infra/dapr/dapr.yaml                  multi-app run file for every service
    infra/nats/streams/<STREAM>.json      JetStream StreamConfig per stream
    infra/nats/auth.conf                  lane permissions per service (virtufin.permissions)

The folders `infra/k8s`, `infra/dapr` and `infra/nats/streams` belong to the renderer: a file
there that the render does not produce is stale and reported by `check_drift`.

Example:
    >>> files = render_all(Path("."))
    >>> "infra/k8s/kustomization.yaml" in {p.as_posix() for p in files}
    True
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any, Final

from virtufin.deploy import dapr, k8s
from virtufin.deploy._yaml import dump_json, dump_yaml
from virtufin.deploy.inputs import DeployInputs, load_inputs
from virtufin.deploy.streams import stream_config, stream_specs
from virtufin.errors import ConfigError
from virtufin.permissions import render_nats_authorization

__all__ = [
    "DAPR_DIR",
    "K8S_DIR",
    "MANAGED_DIRS",
    "NATS_AUTH_FILE",
    "STREAMS_DIR",
    "check_drift",
    "render_all",
    "render_inputs",
    "write_all",
]

K8S_DIR: Final = PurePosixPath("infra/k8s")
DAPR_DIR: Final = PurePosixPath("infra/dapr")
STREAMS_DIR: Final = PurePosixPath("infra/nats/streams")
NATS_AUTH_FILE: Final = PurePosixPath("infra/nats/auth.conf")
MANAGED_DIRS: Final = (K8S_DIR, DAPR_DIR, STREAMS_DIR)


def _runtime_note(inputs: DeployInputs) -> str:
    return f"Written for Dapr runtime {inputs.versions['DAPR_RUNTIME_VERSION']}."


def _check_component_names(inputs: DeployInputs) -> None:
    clash = set(dapr.pubsub_names(inputs)) & set(dapr.store_names(inputs))
    if clash:
        raise ConfigError(
            inputs.services.path,
            "pubsub.pubsubName / state.storeName",
            f"component name(s) {sorted(clash)} used for both pub/sub and state",
        )


def _dapr_components(
    inputs: DeployInputs, endpoints: dapr.Endpoints, *, alternatives: bool
) -> dict[str, dict[str, Any]]:
    """File name → component; defaults, or (with `alternatives`) their replacements."""
    files: dict[str, dict[str, Any]] = {}
    for name in dapr.pubsub_names(inputs):
        if alternatives:
            files[f"{name}-redis.yaml"] = dapr.redis_pubsub(name, inputs, endpoints)
        else:
            files[f"{name}-jetstream.yaml"] = dapr.jetstream_pubsub(name, inputs, endpoints)
    for name in dapr.store_names(inputs):
        if alternatives:
            files[f"{name}-postgresql.yaml"] = dapr.postgresql_state(name, inputs, endpoints)
        else:
            files[f"{name}-redis.yaml"] = dapr.redis_state(name, inputs, endpoints)
    return files


def _k8s_documents(inputs: DeployInputs, stream_files: Mapping[str, str]) -> dict[str, Any]:
    """Path below infra/k8s → one Kubernetes (or Dapr) object, in kustomization order."""
    docs: dict[str, Any] = {
        "namespace.yaml": k8s.namespace(inputs),
        "configmap-services.yaml": k8s.services_configmap(inputs),
        "brokers/nats-deployment.yaml": k8s.nats_deployment(inputs),
        "brokers/nats-service.yaml": k8s.nats_service(inputs),
        "brokers/redis-deployment.yaml": k8s.redis_deployment(inputs),
        "brokers/redis-service.yaml": k8s.redis_service(inputs),
    }
    for name, component in _dapr_components(inputs, dapr.CLUSTER, alternatives=False).items():
        docs[f"dapr/{name}"] = component
    docs["dapr/resiliency.yaml"] = dapr.resiliency(inputs, dapr.CLUSTER)
    docs["nats-streams-configmap.yaml"] = k8s.nats_streams_configmap(stream_files, inputs)
    docs["nats-streams-job.yaml"] = k8s.nats_streams_job(stream_files, inputs)
    for svc in inputs.services.services:
        docs[f"services/{svc.name}-deployment.yaml"] = k8s.deployment(svc, inputs)
        docs[f"services/{svc.name}-service.yaml"] = k8s.service(svc, inputs)
    return docs


def render_inputs(inputs: DeployInputs, *, app_dir: str = "../..") -> dict[Path, str]:
    """Render every file from parsed inputs (pure: no file is read or written).

    Args:
        inputs: services.json and versions.env, parsed.
        app_dir: the project root as seen from `infra/dapr/` (for the multi-app run file).

    Returns:
        Relative path → file text, sorted by path.

    Raises:
        ConfigError: the inputs cannot be rendered (e.g. a name used twice).
    """
    _check_component_names(inputs)
    files: dict[Path, str] = {}
    stream_files = {
        f"{spec.name}.json": dump_json(stream_config(spec))
        for spec in stream_specs(inputs.services)
    }
    for name, text in stream_files.items():
        files[Path(STREAMS_DIR / name)] = text
    files[Path(NATS_AUTH_FILE)] = render_nats_authorization(inputs.services)

    runtime = _runtime_note(inputs)
    k8s_docs = _k8s_documents(inputs, stream_files)
    for rel, doc in k8s_docs.items():
        uses_dapr = rel.startswith("dapr/") or rel.startswith("services/")
        files[Path(K8S_DIR / rel)] = dump_yaml([doc], extra_header=[runtime] if uses_dapr else [])
    kustomize_note = ["Apply with: kubectl apply -k infra/k8s"]
    files[Path(K8S_DIR / "kustomization.yaml")] = dump_yaml(
        [k8s.kustomization(list(k8s_docs))], extra_header=kustomize_note
    )

    local = _dapr_components(inputs, dapr.LOCAL, alternatives=False)
    local["resiliency.yaml"] = dapr.resiliency(inputs, dapr.LOCAL)
    for name, doc in local.items():
        files[Path(DAPR_DIR / "components" / name)] = dump_yaml([doc], extra_header=[runtime])
    swap = "Replaces the component of the same name: copy it over infra/dapr/components/."
    for name, doc in _dapr_components(inputs, dapr.LOCAL, alternatives=True).items():
        files[Path(DAPR_DIR / "alternatives" / name)] = dump_yaml(
            [doc], extra_header=[runtime, swap]
        )
    run_notes = _run_notes(inputs)
    run_file = dapr.multi_app_run(inputs, app_dir=app_dir, resources_dir="./components")
    files[Path(DAPR_DIR / "dapr.yaml")] = dump_yaml([run_file], extra_header=run_notes)
    return dict(sorted(files.items(), key=lambda item: item[0].as_posix()))


def _run_notes(inputs: DeployInputs) -> Sequence[str]:
    version = inputs.versions["DAPR_RUNTIME_VERSION"]
    return [
        "Local multi-app run: start the brokers (`virtufin-brokers start` in `nix develop`,",
        f"or the CI servers), then `dapr init --slim --runtime-version {version}`",
        "and `dapr run -f infra/dapr/dapr.yaml` from the project root.",
    ]


def render_all(root: Path, out_root: Path | None = None) -> dict[Path, str]:
    """Render every deploy file of the project at `root`.

    Args:
        root: the folder holding services.json and versions.env.
        out_root: where the files are meant to live (default `root`); only relative
            references between the two (the run file's app folder) depend on it.

    Returns:
        Path relative to `out_root` → file text, sorted by path.
    """
    out = root if out_root is None else out_root
    app_dir = Path(os.path.relpath(root.resolve(), (out / DAPR_DIR).resolve())).as_posix()
    return render_inputs(load_inputs(root), app_dir=app_dir)


def _managed_files(base: Path) -> set[Path]:
    found: set[Path] = set()
    for folder in MANAGED_DIRS:
        top = base / folder
        if top.is_dir():
            found.update(p.relative_to(base) for p in top.rglob("*") if p.is_file())
    return found


def write_all(root: Path, out_root: Path | None = None) -> list[Path]:
    """Render and write every file; delete files of the managed folders the render lacks.

    Only files whose text changes are written, so an up-to-date tree is left untouched.

    Returns:
        The absolute paths created, changed or deleted, sorted (empty: nothing to do).
    """
    out = root if out_root is None else out_root
    files = render_all(root, out)
    changed: list[Path] = []
    for rel, text in files.items():
        target = out / rel
        if target.is_file() and target.read_text(encoding="utf-8") == text:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        changed.append(target)
    for rel in sorted(_managed_files(out) - set(files)):
        (out / rel).unlink()
        changed.append(out / rel)
    for folder in MANAGED_DIRS:
        top = out / folder
        if top.is_dir():
            for sub in sorted(top.rglob("*"), key=lambda p: len(p.parts), reverse=True):
                if sub.is_dir() and not any(sub.iterdir()):
                    sub.rmdir()
    return sorted(p.absolute() for p in changed)


def check_drift(root: Path) -> list[str]:
    """Relative paths (POSIX) whose committed text differs from a fresh render.

    A path is listed when the file is missing, differs, or sits in a managed folder
    although the render does not produce it. An empty list means no drift.
    """
    files = render_all(root)
    drift = {
        rel.as_posix()
        for rel, text in files.items()
        if not (root / rel).is_file() or (root / rel).read_text(encoding="utf-8") != text
    }
    drift.update(rel.as_posix() for rel in _managed_files(root) - set(files))
    return sorted(drift)
