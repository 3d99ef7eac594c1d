"""A real TLS redis-server for tests, with a CA, server and client certificates made by openssl."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import redis

from trustcard.local.redis_server import RedisServer, free_port


def _openssl(*args: str) -> None:
    openssl = shutil.which("openssl")
    assert openssl, "the openssl CLI is needed to make test certificates"
    subprocess.run([openssl, *args], check=True, capture_output=True, timeout=30)


@dataclass(frozen=True)
class Pki:
    """A CA and the files it signed, in one directory."""

    ca: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _signed(
    directory: Path, name: str, ca: Path, ca_key: Path, extensions: str
) -> tuple[Path, Path]:
    key, csr, cert = directory / f"{name}.key", directory / f"{name}.csr", directory / f"{name}.crt"
    ext = directory / f"{name}.ext"
    ext.write_text(extensions)
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(key))
    _openssl("req", "-new", "-key", str(key), "-subj", f"/CN={name}", "-out", str(csr))
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
        "-CAcreateserial", "-days", "2", "-sha256", "-extfile", str(ext), "-out", str(cert),
    )  # fmt: skip
    return cert, key


def make_ca(directory: Path, name: str = "test-ca") -> tuple[Path, Path]:
    """A self-signed CA certificate and its key."""
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key = directory / f"{name}.crt", directory / f"{name}.key"
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(ca_key))
    _openssl(
        "req", "-x509", "-new", "-key", str(ca_key), "-subj", f"/CN={name}", "-days", "2",
        "-sha256", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-out", str(ca),
    )  # fmt: skip
    return ca, ca_key


def make_pki(
    directory: Path, server_names: tuple[str, ...] = ("localhost",), with_ip: bool = True
) -> Pki:
    """CA, a server certificate for `server_names` (and 127.0.0.1), and a client certificate."""
    ca, ca_key = make_ca(directory)
    alt = ",".join([*(f"DNS:{n}" for n in server_names), *(["IP:127.0.0.1"] if with_ip else [])])
    # serverAuth and clientAuth, like cert-manager's defaults: a bundled Redis with mutual TLS
    # has its probes present the server's own certificate.
    server_cert, server_key = _signed(
        directory,
        "server",
        ca,
        ca_key,
        f"subjectAltName={alt}\nextendedKeyUsage=serverAuth,clientAuth\n",
    )
    client_cert, client_key = _signed(
        directory, "client", ca, ca_key, "extendedKeyUsage=clientAuth\n"
    )
    return Pki(ca, ca_key, server_cert, server_key, client_cert, client_key)


@dataclass
class TlsRedisServer(RedisServer):
    """redis-server serving TLS only (`--port 0 --tls-port`), optionally requiring client certs."""

    pki: Pki | None = None
    auth_clients: bool = True
    tls_port: int = 0
    # Extra redis-server arguments, e.g. an ACL user.
    extra_args: list[str] = field(default_factory=list)

    def url(self, db: int = 0) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"rediss://{auth}localhost:{self.tls_port}/{db}"

    def start(self, timeout: float = 10.0) -> TlsRedisServer:
        assert self.pki is not None
        self.tls_port = self.tls_port or free_port(self.host)
        self.data_dir = self.data_dir.resolve()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        pki = self.pki
        self.process = subprocess.Popen(
            [
                self.binary, "--bind", self.host, "--port", "0", "--tls-port", str(self.tls_port),
                "--tls-cert-file", str(pki.server_cert), "--tls-key-file", str(pki.server_key),
                "--tls-ca-cert-file", str(pki.ca),
                "--tls-auth-clients", "yes" if self.auth_clients else "no",
                "--dir", str(self.data_dir), "--appendonly", "no", "--save", "",
                "--logfile", str(self.data_dir / "redis.log"), "--daemonize", "no",
                *(["--requirepass", self.password] if self.password else []),
                *self.extra_args,
            ],
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        self.port = self.tls_port
        self.wait_ready(timeout)
        return self

    def client(self) -> redis.Redis:
        assert self.pki is not None
        return redis.Redis(
            host=self.host,
            port=self.tls_port,
            password=self.password,
            ssl=True,
            ssl_ca_certs=str(self.pki.ca),
            ssl_certfile=str(self.pki.client_cert),
            ssl_keyfile=str(self.pki.client_key),
            ssl_check_hostname=False,
            socket_connect_timeout=0.5,
        )

    def wait_ready(self, timeout: float) -> None:
        import time

        deadline = time.monotonic() + timeout
        client = self.client()
        try:
            while True:
                if self.process is not None and self.process.poll() is not None:
                    log = (self.data_dir / "redis.log").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"redis-server exited with {self.process.returncode}: {log}")
                try:
                    if client.ping():
                        return
                except redis.ConnectionError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"TLS redis-server on {self.tls_port} not ready")
                time.sleep(0.05)
        finally:
            client.close()
