"""API keys with scopes, TLS, and the checks that decide whether the server may start.

Modules: :mod:`~inferd.security.keys` (the key records and their files), :mod:`~inferd.security.scopes`
(which call needs which scope), :mod:`~inferd.security.auth` (checking a key), :mod:`~inferd.security.tls`
and :mod:`~inferd.security.startup`. The transports apply them: :mod:`inferd.server.rest.auth` (the HTTP wrapper)
and :mod:`inferd.server.grpc.auth` (the gRPC interceptor). Nothing is imported here, so that importing the settings
stays cheap.
"""
