"""`virtufin deploy render [--check]`: write (or drift-check) every deploy file derived from
services.json and versions.env."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from virtufin.config import project_root

__all__ = ["register"]


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "deploy", help="render Kubernetes, Dapr and NATS files from services.json"
    )
    actions = parser.add_subparsers(dest="action", required=True)
    render = actions.add_parser("render", help="write infra/ from services.json + versions.env")
    render.add_argument("--check", action="store_true", help="only report drift; exit 1 if any")
    render.set_defaults(handler=_render)


def _render(args: argparse.Namespace) -> int:
    from virtufin.deploy import check_drift, write_all

    root = project_root()
    if args.check:
        drift = check_drift(root)
        for rel in drift:
            print(f"drift: {rel}", file=sys.stderr)
        print("infra/ is up to date" if not drift else f"{len(drift)} file(s) differ")
        return 1 if drift else 0
    changed = write_all(root)
    for path in changed:
        print(f"wrote {path}")
    print("infra/ is up to date" if not changed else f"{len(changed)} file(s) written")
    return 0
