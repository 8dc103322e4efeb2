"""``vigil dashboards``: write the Grafana dashboards, or upload them to a Grafana.

::

    vigil dashboards build [--out DIR]        # default ./vigil-dashboards
    vigil dashboards push --grafana-url URL [--folder-uid vigil] [--out DIR]

Files go to the folder named, or ``vigil-dashboards`` in the current directory: never
into the installed package. (The compose stack's copy in ``deploy/grafana/dashboards`` is
rebuilt from a source tree with ``python -m vigil.dashboards``.)

``push`` authenticates with a service-account token from ``$GRAFANA_TOKEN`` or, failing
that, basic auth from ``$GRAFANA_USER`` (default ``admin``) and ``$GRAFANA_PASSWORD``
(names changeable with ``--token-env``, ``--user-env``, ``--password-env``). It makes sure
the folder exists, then sends each dashboard as Grafana's dashboard API expects:
``POST /api/dashboards/db`` with ``{"dashboard": ..., "overwrite": true, "folderUid": ...}``.
Sites that provision from disk (the compose stack) need only ``build``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from typing import Any

from vigil.dashboards import DASHBOARDS, build_all, write_all
from vigil.dashboards.core import FOLDER_TITLE, FOLDER_UID

from vigil.extras import need

#: Where ``vigil dashboards`` writes unless told: a folder in the current directory.
CLI_OUT = "vigil-dashboards"


def cmd_build(args: argparse.Namespace) -> int:
    """Write one JSON file per dashboard."""
    for p in write_all(args.out):
        print(p)
    return 0


def grafana_credential(
    environ: Mapping[str, str], token_env: str, user_env: str, password_env: str
) -> str | tuple[str, str] | None:
    """A token, a ``(user, password)`` pair, or ``None``, from the environment.

    >>> grafana_credential({"GRAFANA_TOKEN": "t"}, "GRAFANA_TOKEN", "U", "P")
    't'
    >>> grafana_credential({"P": "pw"}, "GRAFANA_TOKEN", "U", "P")
    ('admin', 'pw')
    """
    token = environ.get(token_env)
    if token:
        return token
    password = environ.get(password_env)
    if password:
        return (environ.get(user_env) or "admin", password)
    return None


def push(
    url: str,
    credential: str | tuple[str, str] | None,
    *,
    folder_uid: str = FOLDER_UID,
    timeout_s: float = 10.0,
) -> list[dict[str, Any]]:
    """Upload every dashboard to the Grafana at ``url``; return Grafana's answers.

    Raises
    ------
    grafana_client.client.GrafanaException
        When Grafana refuses a request (the message says which).
    """
    GrafanaApi = need("grafana_client", "grafana", "vigil dashboards push").GrafanaApi
    from grafana_client.client import GrafanaClientError

    api = GrafanaApi.from_url(url, credential=credential, timeout=timeout_s)
    try:
        try:
            api.folder.get_folder(folder_uid)
        except GrafanaClientError as ex:
            if getattr(ex, "status_code", None) != 404:
                raise
            api.folder.create_folder(FOLDER_TITLE, uid=folder_uid)
        return [
            api.dashboard.update_dashboard(
                {"dashboard": board, "overwrite": True, "folderUid": folder_uid}
            )
            for board in build_all().values()
        ]
    finally:
        api.client.s.close()  # the HTTP session grafana-client keeps open


def cmd_push(args: argparse.Namespace) -> int:
    """Upload the dashboards through Grafana's HTTP API."""
    from grafana_client.client import GrafanaException

    cred = grafana_credential(os.environ, args.token_env, args.user_env, args.password_env)
    if cred is None:
        print(
            f"vigil dashboards push: set ${args.token_env} (a service-account token) or "
            f"${args.password_env} (with ${args.user_env}, default admin)",
            file=sys.stderr,
        )
        return 2
    try:
        answers = push(args.grafana_url, cred, folder_uid=args.folder_uid)
    except GrafanaException as ex:
        print(f"vigil dashboards push: Grafana refused: {ex}", file=sys.stderr)
        return 1
    except OSError as ex:  # connection refused, DNS
        print(f"vigil dashboards push: cannot reach {args.grafana_url}: {ex}", file=sys.stderr)
        return 1
    for name, answer in zip(DASHBOARDS, answers, strict=True):
        a = answer if isinstance(answer, dict) else {}
        print(f"{name}: {a.get('status', 'ok')} {a.get('url', '')}".rstrip())
    return 0


def register(sub: Any) -> None:
    """Add ``vigil dashboards build|push`` to the CLI (called by ``vigil.flows.cli``)."""
    d = sub.add_parser("dashboards", help="write or upload the Grafana dashboards")
    dsub = d.add_subparsers(dest="dashboards_command", required=True, metavar="ACTION")
    b = dsub.add_parser("build", help="write one JSON file per dashboard")
    b.add_argument("--out", default=CLI_OUT, help=f"folder (default ./{CLI_OUT})")
    b.set_defaults(func=cmd_build)
    p = dsub.add_parser("push", help="upload the dashboards through Grafana's HTTP API")
    p.add_argument("--grafana-url", required=True, help="e.g. http://grafana:3000")
    p.add_argument("--folder-uid", default=FOLDER_UID, help=f"default {FOLDER_UID!r}")
    p.add_argument("--token-env", default="GRAFANA_TOKEN")
    p.add_argument("--user-env", default="GRAFANA_USER")
    p.add_argument("--password-env", default="GRAFANA_PASSWORD")
    p.set_defaults(func=cmd_push)
