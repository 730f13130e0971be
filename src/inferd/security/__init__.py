"""API keys with scopes, TLS, and the checks that decide whether the server may start.

Modules: :mod:`~inferd.security.keys` (the key records and their files), :mod:`~inferd.security.scopes`
(which call needs which scope), :mod:`~inferd.security.auth` (checking a key), :mod:`~inferd.security.asgi`
(the HTTP wrapper), :mod:`~inferd.security.grpc_auth` (the gRPC interceptor), :mod:`~inferd.security.tls`
and :mod:`~inferd.security.startup`. Nothing is imported here, so that importing the settings stays cheap.
"""
