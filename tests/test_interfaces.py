"""Both registries satisfy ``AdapterRegistry``, method for method, signature for signature."""

from __future__ import annotations

import inspect

import pytest

from registry.embedded import EmbeddedRegistry
from registry.interfaces import AdapterRegistry
from registry.remote import RemoteRegistry

METHODS = [
    name
    for name, value in vars(AdapterRegistry).items()
    if callable(value) and (not name.startswith("_") or name in ("__enter__", "__exit__"))
]


@pytest.mark.parametrize("cls", [EmbeddedRegistry, RemoteRegistry])
@pytest.mark.parametrize("method", METHODS)
def test_registry_has_the_protocols_signature(cls: type, method: str) -> None:
    wanted = inspect.signature(getattr(AdapterRegistry, method))
    actual = inspect.signature(getattr(cls, method))
    assert list(actual.parameters) == list(wanted.parameters), f"{cls.__name__}.{method}"
    for name, param in wanted.parameters.items():
        assert actual.parameters[name].kind == param.kind, f"{cls.__name__}.{method}({name})"
        assert actual.parameters[name].default == param.default, f"{cls.__name__}.{method}"


def test_both_registries_are_instances(registry: EmbeddedRegistry) -> None:
    assert isinstance(registry, AdapterRegistry)
    with RemoteRegistry("http://127.0.0.1:9") as remote:
        assert isinstance(remote, AdapterRegistry)
