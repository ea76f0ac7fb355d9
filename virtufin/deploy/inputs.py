"""The two files every rendered deploy file is derived from: services.json and versions.env."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from virtufin.config import ServicesConfig, Versions, load_services, load_versions

__all__ = ["DeployInputs", "load_inputs"]


@dataclass(frozen=True, slots=True, kw_only=True)
class DeployInputs:
    """Parsed `services.json` and `versions.env`, plus the verbatim services.json text."""

    services: ServicesConfig
    versions: Versions
    services_json: str

    @property
    def services_sha256(self) -> str:
        """Digest of the services.json text (rolls the pods when the catalogue changes)."""
        return hashlib.sha256(self.services_json.encode("utf-8")).hexdigest()

    @property
    def app_ids(self) -> tuple[str, ...]:
        """Every Dapr app id, in services.json order."""
        return tuple(svc.dapr_app_id for svc in self.services.services)


def load_inputs(root: Path) -> DeployInputs:
    """Read `root/services.json` and `root/versions.env`.

    Raises:
        ConfigError: either file is missing or invalid.
    """
    services_file = root / "services.json"
    services = load_services(services_file)
    return DeployInputs(
        services=services,
        versions=load_versions(root / "versions.env"),
        services_json=services_file.read_text(encoding="utf-8"),
    )
