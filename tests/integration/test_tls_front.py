"""deploy/nginx/lineguard.conf, run for real: Debian's nginx with a self-signed certificate in front of the
test session's service (on loopback, as the one-machine layout has it). HTTPS answers, HTTP is sent to
HTTPS, the body limit is max_request_bytes with a JSON 413, API keys pass through, and the service's own
port answers on loopback only."""

from __future__ import annotations

import os
import re
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from lineguard.deployments import config_file
from tests.integration.conftest import LINES, Keys, Service
from tests.support import debian_tool, free_port, outward_address, wait_for

ROOT = Path(__file__).resolve().parents[2]
SITE = ROOT / "deploy" / "nginx" / "lineguard.conf"
IMAGE_LINE = LINES[0]


@dataclass
class Front:
    https: str
    http: str
    cert: Path

    @property
    def trust(self) -> ssl.SSLContext:
        """A client context that trusts the front's self-signed certificate (and nothing else)."""
        return ssl.create_default_context(cafile=str(self.cert))


def site_for(port_http: int, port_https: int, upstream: str, tls: Path) -> str:
    """The shipped site with this test's ports, upstream and certificate folder (nothing else changed)."""
    text = SITE.read_text()
    text = re.sub(r"\n\s*listen \[::\]:(80|443)( ssl)?;", "", text)
    text = text.replace("listen 80;", f"listen 127.0.0.1:{port_http};")
    text = text.replace("listen 443 ssl;", f"listen 127.0.0.1:{port_https} ssl;")
    text = text.replace("http://127.0.0.1:8000", upstream).replace("/etc/lineguard/tls", str(tls))
    return text


def size_bytes(value: str) -> int:
    number, unit = re.fullmatch(r"(\d+)([kmg]?)", value.lower()).groups()  # type: ignore[union-attr]
    return int(number) * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[unit]


@pytest.fixture(scope="module")
def front(service: Service, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Front]:
    nginx = debian_tool("nginx", "nginx")
    folder = tmp_path_factory.mktemp("nginx")
    cert = folder / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(folder / "key.pem"), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    port_http, port_https = free_port(), free_port()
    (folder / "lineguard.conf").write_text(site_for(port_http, port_https, service.url, folder))
    user = "user root;\n" if os.geteuid() == 0 else ""  # the workers read this test's private folder
    (folder / "nginx.conf").write_text(
        f"{user}pid {folder}/nginx.pid;\nerror_log {folder}/error.log;\nevents {{}}\n"
        f"http {{\n  access_log off;\n  client_body_temp_path {folder}/body;\n  proxy_temp_path {folder}/proxy;\n"
        f"  include {folder}/lineguard.conf;\n}}\n"
    )
    command = [nginx, "-p", str(folder), "-c", str(folder / "nginx.conf"), "-g", "daemon off;"]
    checked = subprocess.run([*command[:-2], "-t"], capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stderr
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: _answers(f"https://127.0.0.1:{port_https}/healthz", cert), timeout_s=30)
        yield Front(f"https://127.0.0.1:{port_https}", f"http://127.0.0.1:{port_http}", cert)
    finally:
        process.terminate()
        process.wait(timeout=30)


def _answers(url: str, cert: Path) -> bool:
    try:
        return httpx.get(url, verify=ssl.create_default_context(cafile=str(cert)), timeout=5).status_code < 500
    except httpx.HTTPError:
        return False


def test_https_answers_and_http_is_sent_to_https(front: Front) -> None:
    health = httpx.get(f"{front.https}/healthz", verify=front.trust, timeout=30)
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert health.headers["strict-transport-security"].startswith("max-age=")
    plain = httpx.get(f"{front.http}/v1/lines", timeout=10)
    assert plain.status_code == 301 and plain.headers["location"].startswith("https://")
    with pytest.raises(httpx.ConnectError):  # a client that does not trust the certificate is refused
        httpx.get(f"{front.https}/healthz", timeout=10)


def test_the_fronts_limits_are_the_services(front: Front) -> None:
    args = config_file.application(config_file.read()).get("args", {})
    site = SITE.read_text()
    limit = size_bytes(re.search(r"client_max_body_size (\S+);", site).group(1))  # type: ignore[union-attr]
    body_timeout = re.search(r"client_body_timeout (\d+)s;", site).group(1)  # type: ignore[union-attr]
    assert limit == args["max_request_bytes"] and float(body_timeout) == args["body_timeout_s"]
    host, port = front.https.removeprefix("https://").split(":")
    raw = socket.create_connection((host, int(port)), timeout=10)
    with front.trust.wrap_socket(raw, server_hostname=host) as tls:
        tls.sendall(
            f"POST /v1/lines/{IMAGE_LINE}/predict HTTP/1.1\r\nHost: localhost\r\nContent-Length: {limit + 1}\r\n"
            "Content-Type: multipart/form-data; boundary=b\r\n\r\n".encode()
        )  # the declared length is enough: nothing of the body is sent
        head, _, body = tls.recv(65536).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413") and b"application/json" in head, head
    assert b"max_request_bytes" in body


def test_api_keys_pass_through(front: Front, service: Service, api_keys: Keys) -> None:
    image = sorted((service.data / "test" / "good").glob("*.png"))[0]
    with httpx.Client(base_url=front.https, verify=front.trust, timeout=60) as client:
        files = {"file": (image.name, image.read_bytes(), "image/png")}
        assert client.post(f"/v1/lines/{IMAGE_LINE}/predict", files=files).status_code == 401
        answer = client.post(
            f"/v1/lines/{IMAGE_LINE}/predict", files=files, headers={"Authorization": f"Bearer {api_keys.reader}"}
        )
        assert answer.status_code == 200, answer.text
        assert client.get("/v1/lines", headers={"X-API-Key": api_keys.reader}).status_code == 200


def test_the_services_own_port_answers_on_loopback_only(service: Service) -> None:
    port = int(service.url.rsplit(":", 1)[1])
    address = outward_address()
    if address is None:
        pytest.skip("this machine has no network address besides loopback")
    started = time.monotonic()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((address, port), timeout=5).close()
    assert time.monotonic() - started < 5
