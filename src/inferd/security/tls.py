"""TLS for both servers from PEM files: a certificate chain and its key, and optionally a CA whose
certificates clients must present (mutual TLS)."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inferd.security.startup import SecurityConfigError


@dataclass(frozen=True)
class TLSFiles:
    certfile: Path
    """The server's certificate (PEM), followed by any intermediates."""
    keyfile: Path
    """The certificate's private key (PEM, unencrypted)."""
    client_ca: Path | None = None
    """CA certificates (PEM) that sign client certificates; when given, every client must present one."""

    @classmethod
    def from_settings(cls, certfile: Path | None, keyfile: Path | None, client_ca: Path | None) -> TLSFiles | None:
        """None when TLS is off; an error when the files given do not make a whole configuration."""
        if certfile is None and keyfile is None:
            if client_ca is not None:
                raise SecurityConfigError("tls_client_ca needs TLS: give tls_certfile and tls_keyfile too")
            return None
        if certfile is None or keyfile is None:
            raise SecurityConfigError("TLS needs both tls_certfile and tls_keyfile")
        for label, path in (("tls_certfile", certfile), ("tls_keyfile", keyfile), ("tls_client_ca", client_ca)):
            if path is not None and not path.is_file():
                raise SecurityConfigError(f"{label} {path} does not exist or is not a file")
        files = cls(certfile, keyfile, client_ca)
        files.check()
        return files

    def check(self) -> None:
        """Load the files once, so that a wrong file stops the server at start with a clear message."""
        try:
            self.ssl_context()
        except (ssl.SSLError, OSError) as exc:
            raise SecurityConfigError(f"cannot use the TLS files ({self.certfile}, {self.keyfile}"
                                      f"{', ' + str(self.client_ca) if self.client_ca else ''}): {exc}") from None

    def ssl_context(self) -> ssl.SSLContext:
        """The server side of HTTPS with these files (client certificates required when ``client_ca`` is set)."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.certfile, self.keyfile)
        if self.client_ca is not None:
            context.load_verify_locations(cafile=self.client_ca)
            context.verify_mode = ssl.CERT_REQUIRED
        return context

    def grpc_credentials(self) -> Any:
        """``grpc.ServerCredentials`` for ``server.add_secure_port``."""
        import grpc

        root = self.client_ca.read_bytes() if self.client_ca is not None else None
        return grpc.ssl_server_credentials([(self.keyfile.read_bytes(), self.certfile.read_bytes())],
                                           root_certificates=root, require_client_auth=root is not None)
