"""`virtufin config check|show`: validate and print the configuration a process would use."""

from __future__ import annotations

import argparse
import json
from typing import Any

from virtufin.config import load_services, load_settings, load_versions

__all__ = ["register"]


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "config", help="validate and show services.json, versions.env and settings"
    )
    parser.add_argument("action", choices=("check", "show"))
    parser.add_argument("--services", help="path of services.json")
    parser.add_argument("--versions", help="path of versions.env")
    parser.add_argument("--bus", choices=("memory", "nats", "dapr"))
    parser.add_argument("--state", choices=("memory", "sqlite", "postgres", "redis", "dapr"))
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    services = load_services(args.services)
    versions = load_versions(args.versions)
    settings = load_settings(flags={"bus": args.bus, "state": args.state})
    if args.action == "check":
        print(
            f"ok: {len(services.services)} services ({', '.join(services.names)}), "
            f"{len(versions.entries)} pinned versions, bus={settings.bus}, state={settings.state}"
        )
        return 0
    print(
        json.dumps(
            {
                "settings": settings.model_dump(mode="json"),
                "services": services.model_dump(mode="json", by_alias=True)["services"],
                "versions": versions.entries,
            },
            indent=2,
        )
    )
    return 0
