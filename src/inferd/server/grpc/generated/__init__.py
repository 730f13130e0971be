"""Code generated from ../proto by scripts/generate_grpc.py: do not edit, regenerate.

The messages are registered in ``POOL``, a descriptor pool of their own, not in protobuf's default pool, so
that another copy of the same protocol (tritonclient's, KServe's) can be imported in the same process.
"""

from google.protobuf import descriptor_pool

POOL = descriptor_pool.DescriptorPool()
