"""Backends: where models run. One small interface, one implementation per protocol."""

from gateway.backends.base import Backend, NDArray, UnavailableBackend

__all__ = ["Backend", "NDArray", "UnavailableBackend"]
