"""The gateway's own HTTP/2 gRPC server, run in the asyncio event loop."""
