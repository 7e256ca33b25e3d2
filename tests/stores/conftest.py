"""Store fixtures: one moto S3 server and one Hub stand-in per test process; a fresh bucket,
Hub owner and environment per test."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.child_server import hub_standin, moto_server


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with moto_server(tmp_path_factory.mktemp("moto") / "server.log") as server:
        yield server.endpoint


@pytest.fixture
def aws_env(s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """boto3's own variables point at moto; no profile or file of the developer's is read."""
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_DEFAULT_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    return s3_endpoint


@pytest.fixture
def s3_client(aws_env: str) -> Any:
    return boto3.client("s3")


@pytest.fixture
def s3_bucket(s3_client: Any) -> str:
    """A new, empty bucket for this test."""
    name = f"stance-{uuid.uuid4().hex[:16]}"
    s3_client.create_bucket(Bucket=name)
    return name


@pytest.fixture
def s3_url(s3_bucket: str) -> str:
    return f"s3://{s3_bucket}/team/blobs"


@pytest.fixture
def refusing_port() -> Iterator[int]:
    """A loopback port that is bound but never listens: connections are refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


HUB_TOKEN = "hf_stance_test_token"


@pytest.fixture(scope="session")
def hub_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Our stand-in for the Hub's HTTP API (tests/hub_standin.py), taking writes with HUB_TOKEN."""
    folder = tmp_path_factory.mktemp("hub")
    with hub_standin(folder / "data", folder / "server.log", token=HUB_TOKEN) as server:
        yield server.endpoint


@pytest.fixture
def hf_env(hub_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """huggingface_hub's own variables point at the stand-in, for this and child processes."""
    monkeypatch.setenv("HF_ENDPOINT", hub_endpoint)
    monkeypatch.setenv("HF_TOKEN", HUB_TOKEN)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return hub_endpoint


@pytest.fixture
def hf_url(hf_env: str) -> str:
    """``hf://<owner>`` for an owner no other test uses."""
    return f"hf://team-{uuid.uuid4().hex[:12]}"
