"""The gRPC transport: ``inference.GRPCInferenceService`` (Open Inference Protocol / Triton) over the DataPlane."""
