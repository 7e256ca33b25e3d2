"""Blob downloads: `stance serve` against nginx serving the same files from the same disk.

    .venv/bin/python benchmarks/download.py [--size-mb 100] [--duration S] [--repeat N]

One published adapter whose weights are one large blob (``--size-mb``) and whose config is a
small one (~200 bytes). Both servers listen on loopback with one worker each, and serve the
same files: ours through ``GET /v1/blobs/sha256:<hex>`` (catalog lookup, store open, streamed
body, ETag and Range support), nginx (Debian's package) straight from the store's folder
(``sendfile``), the floor of what serving a file over HTTP costs on this machine. The same
``wrk`` load (or the httpx fallback) drives both, alternating, medians of the runs:

- large blob: bytes/s with 4 connections (target: ours >= 50% of nginx's);
- small blob: requests/s with 16 connections (many small blobs: a config or a model card).
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

STANCE = Path(sys.executable).with_name("stance")
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
    server = Server("nginx (sendfile)", 1, True, [], {}, work, "/health", "", work / "nginx.log")
    server.listen_args = False
    conf = tmp / "nginx.conf"
    text = NGINX_CONF.format(user=user, tmp=tmp, blobs=blobs).replace("{port}", str(server.port))
    conf.write_text(text)
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    server.command = [nginx, "-p", str(tmp), "-c", str(conf), "-g", "daemon off;"]
    return server


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
            "ours (stance serve)",
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
        servers = [ours, nginx]
        rows = {"large": (weights, 4), "small": (config, 16)}
        samples: dict[tuple[str, str], list[Sample]] = {}
        try:
            for server in servers:
                server.start()
            for server in servers:
                server.wait_ready()
                for digest, _ in rows.values():
                    status, body = get(f"{server.base}/v1/blobs/{digest}", timeout=60)
                    if status != 200:
                        raise RuntimeError(f"{server.label}: {digest} -> {status} {body[:200]!r}")
            for _ in range(args.repeat):
                for row, (digest, connections) in rows.items():
                    for server in servers:
                        args.connections = connections
                        url = f"{server.base}/v1/blobs/{digest}"
                        sample = load(url, args, args.duration, connections)
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

    ours, floor = "ours (stance serve)", "nginx (sendfile)"
    print(f"generator: {args.generator}, {args.duration}s x {args.repeat} runs, medians")
    print(f"{'row':<34} {'nginx (floor)':>15} {'ours':>15} {'ours/floor':>11}")
    large = [median("large", label, "bytes_per_s") / 2**20 for label in (floor, ours)]
    print(
        f"{f'large blob ({size / 2**20:.0f} MiB), MiB/s, 4 conn':<34} "
        f"{large[0]:15.0f} {large[1]:15.0f} {large[1] / large[0]:11.2f}"
    )
    small = [median("small", label, "rps") for label in (floor, ours)]
    print(
        f"{'small blob, req/s, 16 conn':<34} {small[0]:15.0f} {small[1]:15.0f} "
        f"{small[1] / small[0]:11.2f}"
    )
    verdict = "met" if large[1] / large[0] >= 0.5 else "NOT met"
    print(
        f"HEADLINE large-blob bytes/s ours/nginx: {large[1] / large[0]:.2f} "
        f"(target >= 0.5: {verdict})"
    )
    print(f"load average {os.getloadavg()[0]:.2f}; the machine is shared: read the ratios")


if __name__ == "__main__":
    main()
