"""A stand-in for vLLM's HTTP API on loopback (vLLM itself needs a GPU): its LoRA endpoints.

It answers as vLLM 0.33's ``OpenAIServingModels`` does (vllm/entrypoints/openai/models/
serving.py): ``GET /v1/models`` lists the base model and each adapter (``parent`` set, ``root``
its folder), unloading an unknown name is a 404, loading a name already held a 400 ("has
already been loaded"). A chat request for a model it does not hold goes, as in vLLM, to the
registered LoRA resolvers: the real ``StanceResolver``. Every call is recorded.
"""

from __future__ import annotations

import asyncio
import json
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from vllm.lora.resolver import LoRAResolver


class FakeVllm:
    """Serves ``base`` with the given resolvers; ``calls`` records (path, body) in order."""

    def __init__(self, base: str, resolvers: list[LoRAResolver]) -> None:
        self.base, self.resolvers = base, resolvers
        self.adapters: dict[str, str] = {}  # name -> the folder it was loaded from
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=10)

    def answer(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        with self._lock:
            self.calls.append((path, body))
            if path == "/v1/models":
                return 200, {"object": "list", "data": self._cards()}
            if path == "/v1/unload_lora_adapter":
                if self.adapters.pop(body["lora_name"], None) is None:
                    return _error(HTTPStatus.NOT_FOUND, f"'{body['lora_name']}' cannot be found.")
                return 200, f"Success: LoRA adapter '{body['lora_name']}' removed successfully."
            if path == "/v1/load_lora_adapter":
                if body["lora_name"] in self.adapters:
                    return _error(
                        HTTPStatus.BAD_REQUEST, "The lora adapter has already been loaded."
                    )
                self.adapters[body["lora_name"]] = body["lora_path"]
                return 200, f"Success: LoRA adapter '{body['lora_name']}' added successfully."
            if path == "/v1/chat/completions":
                return self._chat(body["model"])
        return _error(HTTPStatus.NOT_FOUND, f"no route {path}")

    def _cards(self) -> list[dict[str, Any]]:
        base = {"id": self.base, "object": "model", "root": self.base, "parent": None}
        loras = [
            {"id": name, "object": "model", "root": root, "parent": self.base}
            for name, root in self.adapters.items()
        ]
        return [base, *loras]

    def _chat(self, model: str) -> tuple[int, Any]:
        if model != self.base and model not in self.adapters:
            for resolver in self.resolvers:  # vLLM's resolve_lora: the first that answers
                found = asyncio.run(resolver.resolve_lora(self.base, model))
                if found is not None:
                    self.adapters[model] = found.lora_path
                    break
            else:
                return _error(HTTPStatus.NOT_FOUND, f"The model `{model}` does not exist.")
        return 200, {"model": model, "adapter_path": self.adapters.get(model)}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _reply(self, body: dict[str, Any]) -> None:
                status, content = fake.answer(self.path, body)
                data = (content if isinstance(content, str) else json.dumps(content)).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                self._reply({})

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                self._reply(json.loads(self.rfile.read(length) or b"{}"))

            def log_message(self, *args: Any) -> None:
                pass

        return Handler


def _error(status: HTTPStatus, message: str) -> tuple[int, Any]:
    """vLLM's ErrorResponse body."""
    body = {"error": {"message": message, "type": status.phrase, "param": None, "code": status}}
    return status.value, body
