"""Deploy files rendered from services.json and versions.env: Kubernetes, Dapr, NATS streams.

`render_all` returns every file (relative path → text) without touching the disk;
`write_all` writes them; `check_drift` lists committed files a fresh render would change.
`validate` checks rendered objects against the Kubernetes API models and Dapr's component
schema (it needs the `kubernetes` client, a development dependency, imported lazily).

Example:
    >>> check_drift(Path("."))
    []
"""

from __future__ import annotations

from virtufin.deploy.render import check_drift, render_all, render_inputs, write_all

__all__ = ["check_drift", "render_all", "render_inputs", "write_all"]
