"""Resolve over HTTP: `stance serve` against MLflow's registry server, one load generator.

    .venv/bin/python benchmarks/resolve.py [--duration S] [--repeat N] [--connections C]
                                           [--database-url URL]

Both servers run on 127.0.0.1 in this one run, over SQLite, seeded with one version behind the
alias ``prod``, and answer the same question: which version does the alias name now?
``--database-url`` puts our catalog elsewhere (PostgreSQL answers through
``registry.catalog.pg_direct``, SQLite through ``registry.catalog.sqlite_direct``); MLflow
stays on SQLite.

- ours:   GET /v1/resolve?spec=bench-role@prod            (`stance serve`, uvicorn)
- floor:  the same GET answered by a one-route FastAPI app on the same uvicorn, with the same
          options (``registry.api.server.uvicorn_options``, no access log), and our own
          answer's bytes as a constant (benchmarks/floor_app.py, 1 worker): what the stack
          itself can serve; resolve's target is at least half of it
- MLflow: GET /api/2.0/mlflow/registered-models/alias?name=bench-role&alias=prod
          (`mlflow server --backend-store-uri sqlite:///...`: its default workers, and 1)

Rows: ours with 1 worker and with MLflow's default worker count, MLflow with its default and
with 1 worker. The headline ratio is like for like at 1 worker each: with ``--workers N > 1``
uvicorn (both servers use it) leaves Nagle's algorithm on (the listener is bound without
IPPROTO_TCP, Kludex/uvicorn#3149), so every keep-alive response waits ~40 ms for the client's
delayed ACK and every multi-worker row is capped near connections / 40 ms whatever the
application costs. The "1-conn p50" column (one connection, after warm-up) shows it.

The load generator is `wrk` (fixed threads, connections and duration, `--latency`) when it is
installed (Debian: `apt-get install wrk`), else a bounded httpx generator in a second process;
the same one with the same settings drives every server. Each server is warmed up first, then
the runs alternate between the servers and the table reports medians over the runs. MLflow
lives in its own virtual environment, ``.venv-mlflow`` in the repository root, created on the
first run (``pip install mlflow``) so it cannot disturb the project's dependencies. Every
server is stopped at the end, on errors too. The machine is shared and noisy: read the ratio,
which is measured in one run on one machine, rather than the absolute figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run from a checkout without installing the package

from harness import Sample, Server, get, load, versions  # noqa: E402
from synthetic import random_factors, write_adapter  # noqa: E402

STANCE = Path(sys.executable).with_name("stance")
MLFLOW_VENV = ROOT / ".venv-mlflow"
MLFLOW = MLFLOW_VENV / "bin" / "mlflow"
NAME, ALIAS, VERSION = "bench-role", "prod", "1.0.0"
OURS_PATH = f"/v1/resolve?spec={NAME}@{ALIAS}"
MLFLOW_PATH = f"/api/2.0/mlflow/registered-models/alias?name={NAME}&alias={ALIAS}"
NAGLE_MS = 30.0  # a 1-connection p50 above this is a delayed-ACK wait, not work
INSTALL_TIMEOUT_S = 900.0
# MLflow reports usage to its servers unless told not to; all traffic here stays on loopback.
QUIET_ENV = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}


# -- the adapter and the seeds ---------------------------------------------------------------


def synthesise_adapter(dest: Path, *, layers: int = 4, width: int = 256, r: int = 8) -> Path:
    """A valid PEFT LoRA folder (q/v, float32) written with safetensors.numpy, no torch."""
    import numpy as np

    factors = random_factors(np.random.default_rng(0), d_in=width, r=r)
    return write_adapter(
        dest, factors, layers=layers, widths={"q_proj": width, "v_proj": width}, r=r
    )


def seed_ours(home: Path, work: Path, database_url: str | None = None) -> Path:
    """Publish the adapter; the file holding our resolve answer's bytes (the floor's body)."""
    from registry.embedded import EmbeddedRegistry
    from registry.settings import Settings

    folder = synthesise_adapter(work / "adapter")
    with EmbeddedRegistry(Settings(home=home, database_url=database_url)) as registry:
        registry.publish(folder, f"{NAME}@{VERSION}", alias=ALIAS)
        body = work / "resolve-answer.json"
        body.write_text(registry.resolve(f"{NAME}@{ALIAS}").model_dump_json())
    return body


def _post_json(url: str, body: dict) -> dict:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"{}")


def seed_mlflow(base: str) -> None:
    """One registered model, one version, the alias ``prod`` on it: through the REST API."""
    api = f"{base}/api/2.0/mlflow"
    _post_json(f"{api}/registered-models/create", {"name": NAME})
    created = _post_json(
        f"{api}/model-versions/create",
        {"name": NAME, "source": f"s3://bench-bucket/{NAME}/{VERSION}"},  # never fetched
    )
    number = created["model_version"]["version"]
    _post_json(f"{api}/registered-models/alias", {"name": NAME, "alias": ALIAS, "version": number})


# -- servers -----------------------------------------------------------------------------------


def ensure_mlflow() -> None:
    """``.venv-mlflow`` with MLflow, created once; reused on later runs."""
    if MLFLOW.exists():
        return
    print(f"creating {MLFLOW_VENV.relative_to(ROOT)} and installing mlflow (first run only) ...")
    python = shutil.which("python3") or sys.executable
    subprocess.run([python, "-m", "venv", str(MLFLOW_VENV)], check=True, timeout=INSTALL_TIMEOUT_S)
    pip = [str(MLFLOW_VENV / "bin" / "pip"), "install", "--quiet", "mlflow"]
    subprocess.run(pip, check=True, timeout=INSTALL_TIMEOUT_S)


def mlflow_default_workers() -> int:
    """MLflow's own default for ``--workers``, read from its help (it is not passed)."""
    out = subprocess.run(
        [str(MLFLOW), "server", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **QUIET_ENV},
    ).stdout
    found = re.search(r"requests\s+\(default:\s*(\d+)\)", " ".join(out.split()))
    if not found:
        raise RuntimeError("cannot read MLflow's default --workers from `mlflow server --help`")
    return int(found.group(1))


# -- the run -----------------------------------------------------------------------------------


def check_answer(server: Server) -> None:
    status, body = get(server.url)
    if status != 200:
        raise RuntimeError(f"{server.label}: GET {server.url} -> {status} {body[:300]!r}")
    data = json.loads(body)
    version = data.get("version") or data.get("model_version", {}).get("version")
    if version not in (VERSION, "1"):
        raise RuntimeError(f"{server.label}: unexpected answer {body[:300]!r}")


def workers_list(text: str) -> set[int]:
    return {int(n) for n in text.split(",") if n.strip()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per run")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of warm-up per server")
    parser.add_argument("--repeat", type=int, default=3, help="runs per server (alternating)")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument(
        "--our-workers",
        default="1",
        help="`stance serve --workers` rows, comma-separated; MLflow's default is added",
    )
    parser.add_argument(
        "--mlflow-workers",
        default="1",
        help="`mlflow server --workers` rows besides its default, comma-separated",
    )
    parser.add_argument("--generator", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument(
        "--database-url",
        help="our catalog (default: SQLite in a temporary home), e.g. postgresql://user@host/db",
    )
    args = parser.parse_args()
    if not 1 <= args.repeat <= 20 or not 1 <= args.duration <= 120 or not 0 <= args.warmup <= 60:
        parser.error("keep it bounded: 1 <= repeat <= 20, 1 <= duration <= 120, warmup <= 60")
    if not 1 <= args.connections <= 256:
        parser.error("1 <= connections <= 256")
    if args.generator == "auto":
        args.generator = "wrk" if shutil.which("wrk") else "python"

    ensure_mlflow()
    mlflow_default = mlflow_default_workers()
    our_workers = sorted(workers_list(args.our_workers) | {mlflow_default})
    mlflow_workers = sorted(workers_list(args.mlflow_workers) - {mlflow_default})

    with tempfile.TemporaryDirectory(prefix="stance-bench-resolve-") as tmp:
        work = Path(tmp)
        home = work / "stance-home"
        body = seed_ours(home, work, args.database_url)
        our_env = {"STANCE_HOME": str(home)}
        if args.database_url:
            our_env["STANCE_DATABASE_URL"] = args.database_url
        floor = Server(
            "floor (FastAPI constant)",
            1,
            True,
            [sys.executable, str(ROOT / "benchmarks" / "floor_app.py"), "--body-file", str(body)],
            {},
            ROOT,
            "/v1/health",
            OURS_PATH,
            work / "floor.log",
        )
        servers = [floor] + [
            Server(
                "ours (stance serve)",
                n,
                n == 1,  # `stance serve` defaults to 1 worker
                [str(STANCE), "serve", "--workers", str(n), "--no-access-log"],
                our_env,
                ROOT,
                "/v1/health",
                OURS_PATH,
                work / f"stance-{n}.log",
            )
            for n in our_workers
        ]
        mlflow_dir = work / "mlflow"
        mlflow_dir.mkdir()
        mlflow_command = [
            str(MLFLOW),
            "server",
            "--backend-store-uri",
            f"sqlite:///{mlflow_dir / 'mlflow.db'}",  # one catalog for every MLflow row
            "--artifacts-destination",
            str(mlflow_dir / "artifacts"),
        ]
        for n in [mlflow_default, *mlflow_workers]:
            default = n == mlflow_default
            servers.append(
                Server(
                    "MLflow (mlflow server)",
                    n,
                    default,
                    mlflow_command if default else [*mlflow_command, "--workers", str(n)],
                    QUIET_ENV,
                    mlflow_dir,  # anything it writes beside itself lands in the temporary folder
                    "/health",
                    MLFLOW_PATH,
                    work / f"mlflow-{n}.log",
                )
            )
        samples: dict[int, list[Sample]] = {i: [] for i in range(len(servers))}
        single: dict[int, Sample] = {}
        load_before = os.getloadavg()
        try:
            first_mlflow = next(s for s in servers if s.label.startswith("MLflow"))
            first_mlflow.start()  # alone first: it creates the MLflow schema
            first_mlflow.wait_ready()
            for server in servers:
                if server is not first_mlflow:
                    server.start()
            for server in servers:
                server.wait_ready()
            seed_mlflow(first_mlflow.base)
            for i, server in enumerate(servers):
                server.settle()
                check_answer(server)
                if args.warmup > 0:
                    load(server.url, args, args.warmup)
                single[i] = load(server.url, args, 2, connections=1)
            for _ in range(args.repeat):  # alternate, so drifting background load hits all
                for i, server in enumerate(servers):
                    sample = load(server.url, args, args.duration)
                    if sample.errors:
                        raise RuntimeError(f"{server.label}: {sample.errors} failed requests")
                    samples[i].append(sample)
        finally:
            for server in servers:
                server.stop()
        load_after = os.getloadavg()

    report(args, servers, samples, single, load_before, load_after)


def report(
    args: argparse.Namespace,
    servers: list[Server],
    samples: dict[int, list[Sample]],
    single: dict[int, Sample],
    load_before: tuple[float, float, float],
    load_after: tuple[float, float, float],
) -> None:
    if args.generator == "wrk":
        wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=10)
        generator = (wrk_version.stdout or wrk_version.stderr).split("\n")[0].strip()
        settings = f"-t{args.threads} -c{args.connections} -d{args.duration:g}s --latency"
    else:
        why = "chosen" if shutil.which("wrk") else "wrk not installed"
        generator = f"python httpx (asyncio, one second process; {why})"
        settings = f"{args.connections} connections, {args.duration:g}s"
    print(f"load generator: {generator}: {settings}; {args.warmup:g}s warm-up per server")
    catalog = args.database_url.split("@")[-1] if args.database_url else "SQLite (embedded)"
    print(f"ours:   GET {OURS_PATH}  (catalog: {catalog})")
    print(f"MLflow: GET {MLFLOW_PATH}")
    print(f"{args.repeat} runs per server, alternating (all servers up throughout); medians")
    print()
    header = f"{'server':<24} {'workers':>11} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}"
    print(f"{header} {'1-conn p50':>11}  req/s per run")
    rps: dict[int, float] = {}
    nagle = False
    for i, server in enumerate(servers):
        runs = samples[i]
        rps[i] = statistics.median(s.rps for s in runs)
        p50 = statistics.median(s.p50_ms for s in runs)
        p99 = statistics.median(s.p99_ms for s in runs)
        each = " ".join(f"{s.rps:.0f}" for s in runs)
        workers = f"{server.workers}{' (default)' if server.default else ''}"
        flag = "*" if single[i].p50_ms >= NAGLE_MS else " "
        nagle |= flag == "*"
        print(
            f"{server.label:<24} {workers:>11} {rps[i]:9.0f} {p50:8.2f} {p99:8.2f} "
            f"{single[i].p50_ms:10.2f}{flag}  {each}"
        )
    if nagle:
        print(
            f"* 1-connection p50 >= {NAGLE_MS:g} ms: each keep-alive response waits for the "
            "client's delayed ACK\n  (uvicorn --workers N > 1 leaves Nagle on: "
            "Kludex/uvicorn#3149); such rows are capped near\n"
            f"  {args.connections} connections / ~44 ms = "
            f"{args.connections / 0.044:.0f} req/s, whatever the application costs."
        )
    print()
    ours = {s.workers: i for i, s in enumerate(servers) if s.label.startswith("ours")}
    theirs = {s.workers: i for i, s in enumerate(servers) if s.label.startswith("MLflow")}
    floor = next(i for i, s in enumerate(servers) if s.label.startswith("floor"))
    ratio = rps[ours[1]] / rps[floor]
    verdict = "met" if ratio >= 0.5 else "NOT met"
    print(
        f"HEADLINE ours/floor req/s at 1 worker (the same uvicorn and FastAPI answering the same "
        f"bytes as a constant): {ratio:.2f}  (target >= 0.5: {verdict})"
    )
    for n in sorted(set(ours) & set(theirs)):
        ratio = rps[ours[n]] / rps[theirs[n]]
        if n == 1:
            verdict = "met" if ratio >= 10 else "NOT met"
            print(
                f"HEADLINE ours/MLflow req/s, like for like at 1 worker each: {ratio:.2f}x  "
                f"(target >= 10x, issue 19; DESIGN.md's floor is 5x: {verdict})"
            )
        else:
            default = " (MLflow's default)" if servers[theirs[n]].default else ""
            print(f"ours/MLflow req/s, like for like at {n} workers each{default}: {ratio:.2f}x")
    ours_default = next(i for i in ours.values() if servers[i].default)
    mlflow_default = next(i for i in theirs.values() if servers[i].default)
    print(
        "ours/MLflow req/s, each server's default workers "
        f"({servers[ours_default].workers} vs {servers[mlflow_default].workers}): "
        f"{rps[ours_default] / rps[mlflow_default]:.2f}x"
    )
    print()
    ours_python = Path(sys.executable)
    mlflow_python = MLFLOW_VENV / "bin" / "python"
    names = ("stance-registry", "fastapi", "starlette", "uvicorn")
    print(f"ours:   {versions(ours_python, names)}")
    print(f"        {versions(ours_python, ('sqlalchemy', 'pydantic'))}")
    print(f"MLflow: {versions(mlflow_python, ('mlflow', 'fastapi', 'flask', 'uvicorn'))}")
    print(f"        {versions(mlflow_python, ('sqlalchemy',))}")
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?"
    print(
        f"python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} cores "
        f"({affinity} usable); load average before {load_before[0]:.2f}, after "
        f"{load_after[0]:.2f}"
    )
    print(
        "note: the machine is shared with other work and noisy, and the load generator runs on "
        "the same cores as the servers; the ratio (one run, one machine, same generator) is the "
        "figure to read, not the absolute req/s."
    )


if __name__ == "__main__":
    main()
