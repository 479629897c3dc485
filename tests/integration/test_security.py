"""API keys, scopes, line limits and CORS on the served application, over real HTTP."""

from __future__ import annotations

from lineguard.deployments.keys import KeyRing
from tests.integration.conftest import ORIGIN, Keys, Service
from tests.support import wait_for


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def image(service: Service) -> dict[str, tuple[str, bytes, str]]:
    path = sorted((service.data / "test" / "good").glob("*.png"))[0]
    return {"file": (path.name, path.read_bytes(), "image/png")}


def test_without_a_key_only_healthz_answers(service: Service, api_keys: Keys) -> None:
    with service.client() as client:
        assert client.get("/healthz").status_code == 200
        for method, url in [
            ("GET", "/v1/lines"),
            ("GET", "/docs"),
            ("GET", "/openapi.json"),
            ("GET", "/prediction_history"),
            ("GET", "/v1/lines/press-a/history"),
            ("GET", "/v1/lines/press-a/stats"),
            ("POST", "/v1/lines/press-a/predict"),
            ("POST", "/predict"),
            ("PUT", "/v1/lines/press-a/threshold"),
        ]:
            response = client.request(method, url)
            assert response.status_code == 401, (url, response.text)
            assert "lineguard keys create" in response.json()["detail"]
            assert response.headers["www-authenticate"].startswith("Bearer")


def test_keys_by_either_header_and_bad_keys(service: Service, api_keys: Keys) -> None:
    with service.client() as client:
        predict = "/v1/lines/press-a/predict"
        assert client.post(predict, files=image(service), headers=bearer(api_keys.reader)).is_success
        response = client.post(predict, files=image(service), headers={"X-API-Key": api_keys.reader})
        assert response.status_code == 200 and response.json()["line"] == "press-a"
        for headers in [
            bearer(api_keys.revoked),
            bearer(api_keys.reader[:-2] + "zz"),
            bearer("lg_00000000_" + "a" * 43),
            bearer("x" * 10_000),
            {"X-API-Key": "not-a-key"},
            {"Authorization": f"Basic {api_keys.reader}"},  # wrong scheme: no key sent
        ]:
            response = client.get("/v1/lines", headers=headers)
            assert response.status_code == 401, (headers, response.text)


def test_scopes_predict_and_admin(service: Service, api_keys: Keys) -> None:
    with service.client() as client:
        answer = client.post("/v1/lines/press-a/predict", files=image(service), headers=bearer(api_keys.reader)).json()
        assert client.get("/v1/lines/press-a/stats", headers=bearer(api_keys.reader)).status_code == 200
        feedback = f"/v1/predictions/{answer['prediction_id']}/feedback"
        refused = client.post(feedback, json={"label": "ok"}, headers=bearer(api_keys.reader))
        assert refused.status_code == 403 and "needs an admin key" in refused.json()["detail"]
        threshold = client.put("/v1/lines/press-a/threshold", json={"threshold": 1.0}, headers=bearer(api_keys.reader))
        assert threshold.status_code == 403 and "admin" in threshold.json()["detail"]
        accepted = client.post(feedback, json={"label": "ok"}, headers=bearer(api_keys.admin))
        assert accepted.status_code == 200, accepted.text


def test_a_key_limited_to_a_line(service: Service, api_keys: Keys) -> None:
    limited = bearer(api_keys.press_a)
    with service.client() as client:
        assert client.post("/v1/lines/press-a/predict", files=image(service), headers=limited).status_code == 200
        assert client.post("/predict", files=image(service), headers=limited).status_code == 200  # default: press-a
        assert [line["line"] for line in client.get("/v1/lines", headers=limited).json()] == ["press-a"]
        other = client.post("/v1/lines/press-b/predict", files=image(service), headers=limited)
        assert other.status_code == 403 and "limited to lines ['press-a']" in other.json()["detail"]
        assert client.get("/v1/lines/press-b/history", headers=limited).status_code == 403
        assert client.post("/anomaly", json={"values": [0.0]}, headers=limited).status_code == 403  # sensor line
        assert client.get("/prediction_history", headers=limited).status_code == 403
        elsewhere = client.post("/v1/lines/press-b/predict", files=image(service), headers=bearer(api_keys.reader))
        by_id = client.get(f"/v1/predictions/{elsewhere.json()['prediction_id']}", headers=limited)
        assert by_id.status_code == 403, by_id.text


def test_a_revoked_key_is_refused_within_the_refresh_interval(service: Service, api_keys: Keys) -> None:
    ring = KeyRing(service.store)
    key, record = ring.create("temporary")
    with service.client() as client:
        wait_for(lambda: client.get("/v1/lines", headers=bearer(key)).status_code == 200)
        ring.revoke(record.id)
        wait_for(lambda: client.get("/v1/lines", headers=bearer(key)).status_code == 401, timeout_s=5)


def test_cors_allows_only_the_listed_origin(service: Service, api_keys: Keys) -> None:
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}
    with service.client() as client:
        allowed = client.options("/v1/lines/press-a/predict", headers={"Origin": ORIGIN, **preflight})
        assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == ORIGIN
        denied = client.options("/v1/lines/press-a/predict", headers={"Origin": "http://evil.example", **preflight})
        assert denied.status_code == 400 and "access-control-allow-origin" not in denied.headers
        answer = client.get("/v1/lines", headers={"Origin": ORIGIN, **bearer(api_keys.reader)})
        assert answer.status_code == 200 and answer.headers["access-control-allow-origin"] == ORIGIN
        assert "access-control-allow-origin" not in client.get("/v1/lines", headers=bearer(api_keys.reader)).headers
