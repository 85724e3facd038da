"""Every registered route refuses anonymous and wrong-role requests."""

from __future__ import annotations

from flask import Flask
from flask.testing import FlaskClient
from werkzeug.routing import Rule

from ris.auth import ALL_ROLES
from tests.conftest import sign_in

SAMPLE_VALUES = {"IntegerConverter": 1, "FloatConverter": 1.0}


def _url(rule: Rule) -> str:
    """A concrete URL for the rule, with a harmless sample value for each argument."""
    values = {
        name: SAMPLE_VALUES.get(type(converter).__name__, "x")
        for name, converter in rule._converters.items()
    }
    return rule.map.bind("localhost").build(rule.endpoint, values, force_external=False)


def _protected_rules(app: Flask) -> list[tuple[Rule, frozenset[str], str]]:
    found = []
    for rule in app.url_map.iter_rules():
        view = app.view_functions[rule.endpoint]
        if getattr(view, "placa_public", False):
            continue
        allowed = getattr(view, "placa_roles", None)
        assert allowed is not None, f"{rule.endpoint} declares no roles"
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            found.append((rule, allowed, method))
    return found


def test_every_route_declares_its_audience(app: Flask) -> None:
    public = {r.endpoint for r in app.url_map.iter_rules()
              if getattr(app.view_functions[r.endpoint], "placa_public", False)}  # fmt: skip
    assert public == {"static", "ris.home", "auth.login", "health.healthz"}
    assert len(_protected_rules(app)) >= 10


def test_anonymous_requests_are_refused_everywhere(app: Flask, client: FlaskClient) -> None:
    app.config["WTF_CSRF_ENABLED"] = False  # reach the access check, not the CSRF check
    for rule, _allowed, method in _protected_rules(app):
        response = client.open(_url(rule), method=method)
        if method == "GET" and not rule.rule.startswith(("/api/", "/dicomweb")):
            assert response.status_code == 302, rule
            assert response.headers["Location"].startswith("/login?next="), rule
        else:
            assert response.status_code == 401, (rule, method)


def test_wrong_role_requests_are_refused_everywhere(app: Flask, make_user) -> None:
    clients: dict[str, FlaskClient] = {}
    for role in sorted(ALL_ROLES):
        clients[role] = app.test_client()
        sign_in(clients[role], make_user(role))
    app.config["WTF_CSRF_ENABLED"] = False  # reach the access check, not the CSRF check
    checked = 0
    for rule, allowed, method in _protected_rules(app):
        for role in sorted(ALL_ROLES - allowed):
            response = clients[role].open(_url(rule), method=method)
            assert response.status_code == 403, (rule, method, role)
            checked += 1
    assert checked > 0


def test_undeclared_route_is_closed(app: Flask, client: FlaskClient, make_user) -> None:
    @app.route("/forgotten")
    def forgotten() -> str:
        return "open"

    sign_in(client, make_user("admin"))
    assert client.get("/forgotten").status_code == 403
