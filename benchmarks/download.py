"""Blob downloads: `stance serve` against nginx serving the same files from the same disk.

    .venv/bin/python benchmarks/download.py [--size-mb 100] [--duration S] [--repeat N]

One published adapter whose weights are one large blob (``--size-mb``) and whose config is a
small one (~200 bytes). Both servers listen on loopback with one worker each, and serve the
same files: ours through ``GET /v1/blobs/sha256:<hex>`` (catalog lookup, store open, streamed
body, ETag and Range support), nginx (Debian's package) straight from the store's folder
(``sendfile``), the floor of what serving a file over HTTP costs on this machine. The same
``wrk`` load (or the httpx fallback) drives both, alternating, medians of the runs:

- large blob: bytes/s with 4 connections (target: ours >= 50% of nginx's);
- small blob: requests/s with 16 connections (many small blobs: a config or a model card),
  beside a second floor: the framework's own, ``floor_app.py``'s FastAPI route answering the
  same bytes as a constant (same uvicorn options, one worker), what any route here can reach.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run from a checkout without installing the package

from harness import Sample, Server, get, load  # noqa: E402
from synthetic import random_factors, write_adapter  # noqa: E402

from registry.stores import blob_key  # noqa: E402

STANCE = Path(sys.executable).with_name("stance")
OURS, NGINX, CONSTANT = "ours (stance serve)", "nginx (sendfile)", "FastAPI constant"
LARGE_TIMEOUT_S = 60  # per request: wrk's 2 s is less than 100 MiB takes on a loaded machine
NGINX_CONF = """
worker_processes 1;
{user}
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    server {{
        listen 127.0.0.1:{{port}};
        location = /health {{ return 200 "ok"; }}
        location ~ "^/v1/blobs/sha256:([0-9a-f]{{2}})([0-9a-f]{{2}})([0-9a-f]{{60}})$" {{
            default_type application/octet-stream;
            alias {blobs}/sha256/$1/$2/$1$2$3;
        }}
    }}
}}
"""


def seed(home: Path, work: Path, size_mb: int) -> tuple[str, str, int]:
    """Publish one adapter of about ``size_mb``; (weights digest, config digest, weights size)."""
    from registry.embedded import EmbeddedRegistry
    from registry.settings import Settings

    width, r = 4096, 64
    per_layer = 2 * 2 * r * width * 4  # q and v, lora_A and lora_B, float32
    layers = max(1, size_mb * 1024 * 1024 // per_layer)
    factors = random_factors(np.random.default_rng(0), d_in=width, r=r)
    folder = write_adapter(
        work / "adapter", factors, layers=layers, widths={"q_proj": width, "v_proj": width}, r=r
    )
    with EmbeddedRegistry(Settings(home=home, max_weights_bytes=8 * 1024**3)) as registry:
        registry.publish(folder, "bench-download@1.0.0")
        files = {f.path: f for f in registry.resolve("bench-download@1.0.0").files}
    weights, config = files["adapter_model.safetensors"], files["adapter_config.json"]
    return weights.digest, config.digest, weights.size


def nginx_server(work: Path, blobs: Path) -> Server:
    tmp = work / "nginx"
    tmp.mkdir()
    user = "user root;" if os.geteuid() == 0 else ""  # workers must read the store's files
    server = Server(NGINX, 1, True, [], {}, work, "/health", "", work / "nginx.log")
    server.listen_args = False
    conf = tmp / "nginx.conf"
    text = NGINX_CONF.format(user=user, tmp=tmp, blobs=blobs).replace("{port}", str(server.port))
    conf.write_text(text)
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    server.command = [nginx, "-p", str(tmp), "-c", str(conf), "-g", "daemon off;"]
    return server


def constant_server(work: Path, home: Path, config: str) -> Server:
    """The framework's own floor for a small answer: ``floor_app.py``'s constant route (the
    same uvicorn options, one worker) answering the config blob's bytes."""
    body = work / "constant-body"
    body.write_bytes((home / "blobs" / blob_key(config)).read_bytes())
    floor = [sys.executable, str(ROOT / "benchmarks" / "floor_app.py"), "--body-file", str(body)]
    return Server(CONSTANT, 1, True, floor, {}, ROOT, "/v1/health", "", work / "constant.log")


def url_of(server: Server, digest: str) -> str:
    if server.label == CONSTANT:
        return f"{server.base}/v1/resolve?spec=x"
    return f"{server.base}/v1/blobs/{digest}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=100)
    parser.add_argument("--duration", type=int, default=8, help="seconds per run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per server (alternating)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--generator", choices=("auto", "wrk", "python"), default="auto")
    args = parser.parse_args()
    if not 1 <= args.size_mb <= 2048 or not 1 <= args.repeat <= 20 or args.duration > 120:
        parser.error("keep it bounded: size 1-2048 MiB, 1 <= repeat <= 20, duration <= 120")
    if args.generator == "auto":
        args.generator = "wrk" if shutil.which("wrk") else "python"
    if shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists():
        parser.error("nginx is needed for the floor: apt-get install nginx")

    with tempfile.TemporaryDirectory(prefix="stance-bench-download-") as tmp:
        work = Path(tmp)
        home = work / "stance-home"
        weights, config, size = seed(home, work, args.size_mb)
        ours = Server(
            OURS,
            1,
            True,
            [str(STANCE), "serve", "--no-access-log"],
            {"STANCE_HOME": str(home), "STANCE_MAX_WEIGHTS_BYTES": str(8 * 1024**3)},
            ROOT,
            "/v1/health",
            "",
            work / "stance.log",
        )
        nginx = nginx_server(work, home / "blobs")
        constant = constant_server(work, home, config)
        servers = [ours, nginx, constant]
        # row -> (digest, connections, wrk's per-request timeout, servers measured)
        rows = {
            "large": (weights, 4, LARGE_TIMEOUT_S, [ours, nginx]),
            "small": (config, 16, 0, servers),
        }
        samples: dict[tuple[str, str], list[Sample]] = {}
        try:
            for server in servers:
                server.start()
            for server in servers:
                server.wait_ready()
            for digest, _, _, measured in rows.values():
                for server in measured:
                    status, body = get(url_of(server, digest), timeout=60)
                    if status != 200:
                        raise RuntimeError(f"{server.label}: {digest} -> {status} {body[:200]!r}")
            for _ in range(args.repeat):
                for row, (digest, connections, timeout, measured) in rows.items():
                    for server in measured:
                        args.connections = connections
                        url = url_of(server, digest)
                        sample = load(url, args, args.duration, connections, timeout)
                        if sample.errors:
                            raise RuntimeError(f"{server.label}: {sample.errors} failed requests")
                        samples.setdefault((row, server.label), []).append(sample)
        finally:
            for server in servers:
                server.stop()
    report(args, size, samples)


def report(args: argparse.Namespace, size: int, samples: dict) -> None:
    def median(row: str, label: str, what: str) -> float:
        return statistics.median(getattr(s, what) for s in samples[(row, label)])

    print(f"generator: {args.generator}, {args.duration}s x {args.repeat} runs, medians")
    print(
        f"{'row':<34} {'nginx (floor)':>14} {'FastAPI const':>14} {'ours':>10} "
        f"{'ours/nginx':>11} {'ours/const':>11}"
    )
    large = [median("large", label, "bytes_per_s") / 2**20 for label in (NGINX, OURS)]
    print(
        f"{f'large blob ({size / 2**20:.0f} MiB), MiB/s, 4 conn':<34} {large[0]:14.0f} "
        f"{'-':>14} {large[1]:10.0f} {large[1] / large[0]:11.2f} {'-':>11}"
    )
    small = [median("small", label, "rps") for label in (NGINX, CONSTANT, OURS)]
    print(
        f"{'small blob, req/s, 16 conn':<34} {small[0]:14.0f} {small[1]:14.0f} "
        f"{small[2]:10.0f} {small[2] / small[0]:11.2f} {small[2] / small[1]:11.2f}"
    )
    verdict = "met" if large[1] / large[0] >= 0.5 else "NOT met"
    print(
        f"HEADLINE large-blob bytes/s ours/nginx: {large[1] / large[0]:.2f} "
        f"(target >= 0.5: {verdict}); small blobs: {small[2]:.0f} req/s, "
        f"{small[2] / small[1]:.2f} of the framework's constant answer"
    )
    print(f"load average {os.getloadavg()[0]:.2f}; the machine is shared: read the ratios")


if __name__ == "__main__":
    main()
