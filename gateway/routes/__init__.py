"""Thin HTTP endpoints, one module per API surface, over `gateway.dataplane`."""
