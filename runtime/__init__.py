"""The embedded model runtime: serves one Hydrosphere-style model folder over gRPC."""
