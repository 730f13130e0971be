"""Test certificates made with the openssl command: a CA, a server certificate for 127.0.0.1 and localhost,
a client certificate from the same CA, and one from a CA the server does not trust."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

OPENSSL = "/usr/bin/openssl"


@dataclass(frozen=True)
class Certs:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    stranger_cert: Path
    """A client certificate signed by another CA."""
    stranger_key: Path


def _run(*args: str) -> None:
    subprocess.run([OPENSSL, *args], check=True, capture_output=True, timeout=60)


def _ca(folder: Path, name: str) -> tuple[Path, Path]:
    key, cert = folder / f"{name}.key", folder / f"{name}.crt"
    _run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2",
         "-subj", f"/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    return cert, key


def _leaf(folder: Path, name: str, ca: tuple[Path, Path], extensions: str) -> tuple[Path, Path]:
    key, csr, cert, ext = (folder / f"{name}{s}" for s in (".key", ".csr", ".crt", ".ext"))
    ext.write_text(extensions)
    _run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}")
    _run("x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]), "-CAcreateserial",
         "-out", str(cert), "-days", "2", "-extfile", str(ext))
    return cert, key


def make_certs(folder: Path) -> Certs:
    ca = _ca(folder, "test-ca")
    server = _leaf(folder, "server", ca, "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                                         "extendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n")
    client = _leaf(folder, "client", ca, "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n")
    other = _ca(folder, "other-ca")
    stranger = _leaf(folder, "stranger", other, "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n")
    return Certs(ca[0], *server, *client, *stranger)
