"""``stance serve``: the API and pages, on a socket bound here (a busy port is one clear line).

Registered in ``cli/main.py``.
"""

from __future__ import annotations

import copy
import errno
import json
import os
import socket
import sys
from enum import StrEnum
from typing import Annotated, Any

import typer

from cli import context
from cli.output import errors

JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print {url, catalog, store} on stdout once listening.")
]


class LogLevel(StrEnum):
    CRITICAL = "critical"
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"
    DEBUG = "debug"
    TRACE = "trace"


def _listen(host: str, port: int) -> socket.socket:
    """A bound TCP socket: uvicorn takes it (a busy port fails here, not as uvicorn's exit 3)."""
    from registry.errors import RegistryError

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP, or
    # each keep-alive response waits ~40 ms for a delayed ACK (Kludex/uvicorn#3149).
    listener = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
    except OSError as exc:
        listener.close()
        if exc.errno == errno.EADDRINUSE:
            raise RegistryError(
                f"port {port} is in use on {host}: stop what listens there, or pick another "
                "port with --port"
            ) from None
        raise RegistryError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    listener.set_inheritable(True)
    return listener


def _log_config(level: str, access_log: bool) -> dict[str, Any]:
    """uvicorn's logging, with the access log on its own switch (not tied to --log-level)."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["uvicorn"]["level"] = level.upper()
    config["loggers"]["uvicorn.error"]["level"] = level.upper()
    config["loggers"]["uvicorn.access"]["level"] = "INFO" if access_log else "CRITICAL"
    # uvicorn logs requests to stdout; stdout is for --json's one document (and for scripts).
    config["handlers"]["access"]["stream"] = "ext://sys.stderr"
    return config


def _banner(url: str, catalog: str, store: str, *, as_json: bool, access_log: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps({"url": url, "catalog": catalog, "store": store}) + "\n")
        sys.stdout.flush()
    log = "each request logged below" if access_log else "access log off"
    sys.stderr.write(
        f"stance registry at {url}  (API {url}/v1, docs {url}/docs, metrics {url}/metrics)\n"
        f"catalog {catalog}; store {store}; {log}; Ctrl+C stops it\n"
    )
    sys.stderr.flush()


def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port (0: any free one)")] = 8080,
    workers: Annotated[int, typer.Option(metavar="N", min=1, help="Worker processes")] = 1,
    log_level: Annotated[LogLevel, typer.Option(help="uvicorn's own log level")] = LogLevel.WARNING,
    access_log: Annotated[
        bool, typer.Option("--access-log/--no-access-log", help="Log every request on stderr")
    ] = True,
    as_json: JsonOpt = False,
) -> None:
    """Serve the HTTP API (/v1, /docs, /metrics) and the discovery pages.

    The server keeps no state of its own: several processes over one PostgreSQL catalog and
    one store act as one registry.
    """
    import uvicorn
    from sqlalchemy.engine import make_url

    from registry.api.server import uvicorn_options
    from registry.catalog.db import open_catalog

    current = context.settings()
    with errors(as_json=as_json):
        open_catalog(current.catalog_url).close()  # migrated once, before workers start
        listener = _listen(host, port)
    for key, value in context.overrides.items():  # workers build their settings from the env
        os.environ[f"STANCE_{key.upper()}"] = value
    os.environ.pop("STANCE_REGISTRY", None)  # a server serves its own catalog
    bound = listener.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    catalog = make_url(current.catalog_url).render_as_string(hide_password=True)
    _banner(
        f"http://{shown}:{bound}",
        catalog,
        current.store_url,
        as_json=as_json,
        access_log=access_log,
    )
    config = uvicorn.Config(
        "registry.api:create_app",
        factory=True,
        host=host,
        port=bound,
        workers=workers,
        log_config=_log_config(log_level, access_log),
        access_log=access_log,
        **uvicorn_options(current),  # head size and time limits, no proxy trusted by default
    )
    if workers == 1:
        uvicorn.Server(config).run(sockets=[listener])
        return
    from uvicorn.supervisors import Multiprocess

    Multiprocess(config, sockets=[listener]).run()
