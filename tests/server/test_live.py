"""The live status the server keeps for open experiments: concurrent requests share one
computation, requests answer the latest status at once while it is young, the server
refreshes it in the background while a panel looks, and an action makes the next request
ask afresh."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import Any

import pytest

from ultron_nb.server import api

from .conftest import get_json
from .seed import define_wide_flow, seed_experiments


@pytest.fixture
def panel_settings() -> dict[str, Any]:
    return {"live_interval": 0.3, "live_max_age": 2.0, "live_idle": 1.5}


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names passed to the real ``api.experiment`` (it is still called)."""
    seen: list[str] = []
    real = api.experiment
    lock = threading.Lock()

    def counting(ws: Any, name: str) -> Any:
        with lock:
            seen.append(name)
        time.sleep(0.2)  # a Flink that takes its time
        return real(ws, name)

    monkeypatch.setattr(api, "experiment", counting)
    return seen


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_live_status_is_shared_fresh_and_forgotten(jp_fetch: Any, ws: Any,
                                                        calls: list[str]) -> None:
    define_wide_flow(ws, flink_nodes=2)
    seed_experiments(ws, 2, target=f"http://127.0.0.1:{closed_port()}")
    replies = await asyncio.gather(*(get_json(jp_fetch, "ultron", "api", "experiments",
                                              "exp_001") for _ in range(6)))
    assert [code for code, _ in replies] == [200] * 6
    assert calls == ["exp_001"]  # six requests, one computation
    as_of = {body["as_of"] for _, body in replies}
    assert len(as_of) == 1

    t0 = time.monotonic()
    code, again = await get_json(jp_fetch, "ultron", "api", "experiments", "exp_001")
    assert time.monotonic() - t0 < 0.15  # answered from the latest status, no waiting
    assert again["as_of"] >= next(iter(as_of))

    # While a panel looks, the server refreshes it in the background.
    await asyncio.sleep(1.0)
    assert calls.count("exp_001") >= 3
    code, later = await get_json(jp_fetch, "ultron", "api", "experiments", "exp_001")
    assert later["as_of"] > next(iter(as_of))

    # Nobody looks for live_idle seconds: the refreshing stops.
    await asyncio.sleep(2.0)
    before = len(calls)
    await asyncio.sleep(1.0)
    assert len(calls) == before

    # An action (here one that fails) drops the status: the next answer was asked after it.
    await get_json(jp_fetch, "ultron", "api", "experiments", "exp_001")
    acted = time.time()
    code, _ = await get_json(jp_fetch, "ultron", "api", "experiments", "exp_001", "resume",
                             method="POST", body="{}")
    assert code == 503  # the recorded cluster is gone
    code, after = await get_json(jp_fetch, "ultron", "api", "experiments", "exp_001")
    assert after["as_of"] >= acted
