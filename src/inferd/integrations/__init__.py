"""inferd hosted by other serving engines (Ray Serve: :mod:`inferd.integrations.ray_serve`).

Each integration imports its engine lazily: importing this package needs none of them."""
