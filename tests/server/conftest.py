"""Fixtures of the server tests: a Jupyter server (pytest-jupyter) with ultron's extension,
unauthenticated access off, over a fresh ultron home."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from traitlets.config import Config

from ultron_nb.config import Settings
from ultron_nb.workspace import Workspace


@pytest.fixture
def panel_home(tmp_path: Path) -> Path:
    return tmp_path / "ultron-home"


@pytest.fixture
def panel_settings() -> dict[str, Any]:
    """Extra ``UltronServer`` settings a test wants (override the fixture)."""
    return {}


@pytest.fixture
def jp_server_config(panel_home: Path, panel_settings: dict[str, Any]) -> Config:
    return Config({
        "ServerApp": {
            "jpserver_extensions": {"ultron_nb.server": True},
            "allow_unauthenticated_access": False,
        },
        "UltronServer": {"home": str(panel_home), **panel_settings},
    })


@pytest.fixture
def ws(panel_home: Path) -> Workspace:
    """The workspace the server reads (same home)."""
    return Workspace(Settings(home=panel_home))


async def get_json(jp_fetch: Any, *parts: str, **kwargs: Any) -> tuple[int, Any]:
    """``(status, decoded JSON body)`` of a request that may fail."""
    response = await jp_fetch(*parts, raise_error=False, **kwargs)
    assert response.headers["Content-Type"].startswith("application/json"), \
        (response.code, response.headers["Content-Type"], response.body[:200])
    return response.code, json.loads(response.body)
