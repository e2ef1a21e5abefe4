"""Request logs: each sampled backend call recorded as a TF Serving `PredictionLog`, written
off the request path by sinks with bounded queues (rotating TFRecord files with a JSON-lines
index, CloudEvents over HTTP)."""

from gateway.requestlog.call import LoggedCall
from gateway.requestlog.sink import Sink, SinkHealth

__all__ = ["LoggedCall", "Sink", "SinkHealth"]

# Where things are: call.py (LoggedCall, what the data plane hands over), records.py (a call as a
# PredictionLog and its index line), queue.py (BackgroundWriter: bounded queue + writer thread),
# sink.py (the Sink protocol), file_sink.py (rotating TFRecord files + JSON-lines index),
# cloudevents.py (CloudEvents over HTTP), logs.py (RequestLogs: manifests' specs -> sinks,
# sampling, reloads, health).
