"""An HTTP/JSON inference gateway: contracts, codecs and pooled gRPC to model backends."""

__version__ = "0.1.0"
