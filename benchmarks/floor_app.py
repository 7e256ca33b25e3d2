"""The floor for ``benchmarks/resolve.py``: the same uvicorn serving a constant JSON body.

    python benchmarks/floor_app.py --port P --body-file F

One route, ``GET /v1/resolve``, answering the bytes of ``--body-file`` (our own resolve answer,
so the size is the same) with FastAPI and uvicorn configured as ``stance serve --no-access-log``
runs them: one worker, log level warning, no access log, and ``uvicorn_options`` (the bounded
httptools protocol, keep-alive timeout, no Server header). What resolve costs beyond this is
ours to remove.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import uvicorn
from fastapi import FastAPI, Response

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run from a checkout without installing the package

from registry.api.server import uvicorn_options  # noqa: E402
from registry.settings import Settings  # noqa: E402


def create_app(body: bytes) -> FastAPI:
    app = FastAPI()

    @app.get("/v1/resolve")
    async def resolve(spec: str) -> Response:
        return Response(body, media_type="application/json")

    @app.get("/v1/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--body-file", type=Path, required=True)
    options = parser.parse_args()
    app = create_app(options.body_file.read_bytes())
    config = uvicorn.Config(
        app,
        host=options.host,
        port=options.port,
        log_level="warning",
        access_log=False,
        **uvicorn_options(Settings()),
    )
    uvicorn.Server(config).run()
