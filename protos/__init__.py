"""Protocol buffer messages (generated, private proto packages) and the upstream gRPC method table."""
