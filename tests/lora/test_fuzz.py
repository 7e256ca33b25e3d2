"""Differential fuzzing with a CI budget: the reader against safetensors, the config checker.

A few hundred examples each (well under 30 s); ``benchmarks/fuzz_reader.py`` runs longer.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings

from tests.lora import fuzzing

CI = settings(
    max_examples=300,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@CI
@given(fuzzing.safetensors_bytes())
def test_reader_agrees_with_safetensors(data: bytes) -> None:
    fuzzing.check_reader(data)


@CI
@given(fuzzing.config_texts())
def test_config_checker_refuses_cleanly(text: str) -> None:
    fuzzing.check_config(text)


@CI
@given(fuzzing.adapter_folders())
def test_inspector_refuses_cleanly(files: tuple[str, bytes]) -> None:
    fuzzing.check_inspect(files)
