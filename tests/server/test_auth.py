"""Every route of ultron's server extension needs authentication: walked from the routes the
running server registered (not from a list kept by hand), with unauthenticated access off."""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import unquote

from tornado.routing import Router

from ultron_nb.server.handlers import ROUTES, UltronHandler

METHODS = ("get", "post", "put", "patch", "delete")


def registered_routes(app: Any) -> list[tuple[str, type]]:
    """(regex, handler class) of every ultron handler in the server's routing table."""
    found: list[tuple[str, type]] = []

    def walk(router: Any) -> None:
        for rule in getattr(router, "rules", []):
            target = rule.target
            if isinstance(target, Router):
                walk(target)
            elif isinstance(target, type) and issubclass(target, UltronHandler):
                found.append((rule.matcher.regex.pattern, target))

    walk(app.wildcard_router)
    walk(app.default_router)
    return found


def sample_path(pattern: str) -> str:
    path = re.sub(r"\(\?P<path>\.\*\)", "no/such/route", pattern)
    path = re.sub(r"\(\?P<(\w+)>\[\^/\]\+\)", lambda m: f"sample_{m.group(1)}", path)
    return unquote(path.rstrip("$"))


def methods_of(handler: type) -> list[str]:
    return [m for m in METHODS if any(m in k.__dict__ for k in handler.__mro__
                                      if issubclass(k, UltronHandler) and k is not UltronHandler)]


async def test_every_route_refuses_a_request_without_token(
        jp_serverapp: Any, jp_fetch: Any, jp_base_url: str) -> None:
    routes = registered_routes(jp_serverapp.web_app)
    assert {h for _, h in routes} == {h for _, h in ROUTES}  # every route is registered
    assert len(routes) == len(ROUTES)
    prefix = unquote(jp_base_url) + "ultron/api/"
    checked = 0
    for pattern, handler in routes:
        path = sample_path(pattern)
        assert path.startswith(prefix), f"{pattern} ignores base_url"
        methods = methods_of(handler)
        assert methods, handler
        for method in methods:
            body = "{}" if method != "get" else None
            response = await jp_fetch(path[len(unquote(jp_base_url)):], method=method.upper(),
                                      body=body, headers={"Authorization": ""},
                                      raise_error=False, follow_redirects=False)
            assert response.code == 403, (method, path, response.code, response.body[:200])
            error = json.loads(response.body)["error"]  # JSON, one line, no ultron code ran
            assert error in ("HTTPError: Forbidden",
                             "HTTPError: '_xsrf' argument missing from POST"), error
            checked += 1
    assert checked >= len(ROUTES)

    # The same routes answer with the token (so the 403 above was the missing token).
    ok = await jp_fetch("ultron", "api", "flows")
    assert ok.code == 200 and json.loads(ok.body) == []


async def test_a_post_with_the_login_cookie_needs_the_xsrf_header(
        jp_serverapp: Any, jp_fetch: Any, http_server_client: Any, jp_base_url: str) -> None:
    token = jp_serverapp.identity_provider.token
    # Logging in with the token in the URL sets the login cookie (as a browser would).
    first = await jp_fetch("ultron", "api", "flows", params={"token": token},
                           headers={"Authorization": ""})
    assert first.code == 200
    cookies = [c.split(";", 1)[0] for c in first.headers.get_list("Set-Cookie")]
    login = [c for c in cookies if c.startswith("username-")]
    assert login, cookies
    xsrf = [c for c in cookies if c.startswith("_xsrf=")]
    url = f"{jp_base_url}ultron/api/experiments/nope/stop"

    async def post(headers: dict[str, str]) -> Any:
        return await http_server_client.fetch(
            url, method="POST", body="{}", raise_error=False,
            headers={"Content-Type": "application/json", **headers})

    # The cookie alone: refused before any ultron code runs.
    refused = await post({"Cookie": "; ".join(login + xsrf)})
    assert refused.code == 403, refused.body
    # The cookie plus a matching X-XSRFToken: past authentication (the experiment is unknown).
    if not xsrf:
        page = await http_server_client.fetch(f"{jp_base_url}login", raise_error=False)
        xsrf = [c.split(";", 1)[0] for c in page.headers.get_list("Set-Cookie")
                if c.startswith("_xsrf=")]
    assert xsrf
    accepted = await post({"Cookie": "; ".join(login + xsrf),
                           "X-XSRFToken": xsrf[0].split("=", 1)[1]})
    assert accepted.code == 404, accepted.body
    assert json.loads(accepted.body)["error"].startswith("NotFoundError: no experiment")
