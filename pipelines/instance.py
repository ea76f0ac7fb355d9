"""The embedded Dagster instance: SQLite under ``<state_dir>/dagster`` (``DAGSTER_HOME``).

`virtufin ui` and `run_pipeline` share it, so runs made by ``virtufin run`` show up in the UI.
The template is also committed as ``infra/dagster/dagster.local.yaml`` (a test keeps the two
equal); production uses ``infra/dagster/dagster.yaml`` instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

__all__ = ["DAGSTER_HOME_DIR", "LOCAL_DAGSTER_YAML", "ensure_dagster_home"]

DAGSTER_HOME_DIR: Final = "dagster"
LOCAL_DAGSTER_YAML: Final = """\
# Embedded Dagster instance (virtufin ui / virtufin run): everything in SQLite files under
# DAGSTER_HOME (<state_dir>/dagster), no server. Production: infra/dagster/dagster.yaml.
storage:
  sqlite:
    base_dir: {dagster_home}/storage
run_coordinator:
  module: dagster.core.run_coordinator
  class: QueuedRunCoordinator
  config:
    max_concurrent_runs: 4
run_launcher:
  module: dagster.core.launcher
  class: DefaultRunLauncher
local_artifact_storage:
  module: dagster.core.storage.root
  class: LocalArtifactStorage
  config:
    base_dir: {dagster_home}
telemetry:
  enabled: false
"""


def ensure_dagster_home(state_dir: str | Path) -> Path:
    """``<state_dir>/dagster`` with its ``dagster.yaml`` (written once, then left alone)."""
    home = Path(state_dir).resolve() / DAGSTER_HOME_DIR
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text(LOCAL_DAGSTER_YAML.format(dagster_home=home))
    return home
