"""The vLLM plugin: a LoRA resolver that serves ``name@selector`` from the registry.

vLLM loads it through the ``vllm.general_plugins`` entry point (pyproject.toml) in each of its
processes. With ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``, a request naming a model vLLM has
not loaded (``"model": "curious-uncertainty@prod"``) reaches ``resolve_lora``, which resolves
the spec, checks the base model and hands vLLM the verified version folder. The only module of
the package that imports vLLM.
"""

from __future__ import annotations

import asyncio

from vllm.lora.request import LoRARequest
from vllm.lora.resolver import LoRAResolver, LoRAResolverRegistry

from registry.serving.resolver import EngineAdapters

RESOLVER_NAME = "stance"


class StanceResolver(LoRAResolver):
    """Resolves adapter specs into LoRARequests; the blocking work runs off vLLM's event loop."""

    def __init__(self, adapters: EngineAdapters | None = None) -> None:
        self.adapters = adapters or EngineAdapters()

    async def resolve_lora(self, base_model_name: str, lora_name: str) -> LoRARequest | None:
        served = await asyncio.to_thread(self.adapters.serve, base_model_name, lora_name)
        if served is None:
            return None
        return LoRARequest(
            lora_name=lora_name,
            lora_int_id=served.int_id,  # vLLM numbers resolved adapters itself; must be > 0
            lora_path=str(served.path),
            base_model_name=base_model_name,
        )


def register() -> None:
    """The entry point: register the resolver (cheap; the registry opens on the first request)."""
    LoRAResolverRegistry.register_resolver(RESOLVER_NAME, StanceResolver())
