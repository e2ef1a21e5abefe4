"""What one Predict call costs the gateway's process, by client style (no HTTP involved).

Runs a closed loop of N coroutines on uvloop against a Predict server and prints calls/s and
process CPU per call for each style:

- aio-proto   grpc.aio channel, PredictRequest object in, PredictResponse object out
- aio-bytes   grpc.aio channel, the serialized request built once per call as bytes, raw bytes out
- sync-future sync grpc channel, `.future()` bridged to asyncio with call_soon_threadsafe
- aio-2ch     two grpc.aio channels (distinct args, so two connections), calls alternate
- inloop      the gateway's in-loop HTTP/2 client (gateway.grpc_client), bytes in and out as aio-bytes

usage (from the repository root, server on another core):
  taskset -c 1 python -m runtime serve benchmarks/configs/embedded/models/increment --port 9501 &
  PYTHONPATH=$PWD taskset -c 0 python benchmarks/grpc_client_bench.py --target 127.0.0.1:9501
  PYTHONPATH=$PWD taskset -c 0 python benchmarks/grpc_client_bench.py --styles aio-bytes inloop --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import time
from collections.abc import Awaitable, Callable

import grpc
import numpy as np
import uvloop

from gateway.backends.resilience import retry_service_config
from gateway.grpc_client import InloopChannel
from protos.services import TF_PREDICT
from protos.tensorflow_serving.predict_pb2 import PredictRequest, PredictResponse
from tensorcodecs.tensor_proto import decode_tensor, fill_tensor

OPTIONS: dict[str, list[tuple[str, int | str]]] = {
    "default": [],
    "noretry": [("grpc.enable_retries", 0)],
    "retry": [("grpc.enable_retries", 1), ("grpc.service_config", retry_service_config(3))],
    "lean": [("grpc.enable_retries", 0), ("grpc.max_receive_message_length", -1),
             ("grpc.max_send_message_length", -1), ("grpc.so_reuseport", 0),
             ("grpc.optimization_target", "throughput")],
}


def request(size: int) -> PredictRequest:
    req = PredictRequest()
    req.model_spec.name = "increment"
    fill_tensor(req.inputs["number"], np.ones(size, np.int32), None)
    return req


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def loop(call: Callable[[], Awaitable[object]], conc: int, seconds: float) -> tuple[float, float]:
    stop = time.monotonic() + seconds
    count = 0

    async def worker() -> None:
        nonlocal count
        while time.monotonic() < stop:
            await call()
            count += 1

    await asyncio.gather(*(worker() for _ in range(10)))  # warm up
    count, started, cpu0 = 0, time.monotonic(), cpu()
    stop = started + seconds
    await asyncio.gather(*(worker() for _ in range(conc)))
    elapsed = time.monotonic() - started
    return count / elapsed, (cpu() - cpu0) / count * 1e6


async def main(args: argparse.Namespace) -> None:
    req = request(args.size)
    path = TF_PREDICT.path
    ch = grpc.aio.insecure_channel(args.target, options=OPTIONS.get(args.options, []))
    ch2 = grpc.aio.insecure_channel(args.target, options=[("gateway.channel", 2)])
    proto_call = ch.unary_unary(path, request_serializer=PredictRequest.SerializeToString,
                                response_deserializer=PredictResponse.FromString)
    bytes_call = ch.unary_unary(path)
    bytes_call2 = ch2.unary_unary(path)
    sync_ch = grpc.insecure_channel(args.target)
    sync_call = sync_ch.unary_unary(path)
    inloop_ch = InloopChannel(args.target)
    ev = asyncio.get_running_loop()

    async def aio_proto() -> object:
        r = await proto_call(req, timeout=10)
        return {k: decode_tensor(t) for k, t in r.outputs.items()}

    async def aio_bytes() -> object:
        raw = await bytes_call(req.SerializeToString(), timeout=10, metadata=args.metadata)
        r = PredictResponse.FromString(raw)
        return {k: decode_tensor(t) for k, t in r.outputs.items()}

    async def inloop() -> object:
        raw = await inloop_ch.unary(path, req.SerializeToString(), 10, args.metadata or ())
        r = PredictResponse.FromString(raw)
        return {k: decode_tensor(t) for k, t in r.outputs.items()}

    flip = [0]

    async def aio_2ch() -> object:
        flip[0] ^= 1
        raw = await (bytes_call if flip[0] else bytes_call2)(req.SerializeToString(), timeout=10)
        r = PredictResponse.FromString(raw)
        return {k: decode_tensor(t) for k, t in r.outputs.items()}

    async def sync_future() -> object:
        fut = ev.create_future()
        call = sync_call.future(req.SerializeToString(), timeout=10)

        def done(f: grpc.Future) -> None:
            ev.call_soon_threadsafe(_settle, fut, f)

        call.add_done_callback(done)
        raw = await fut
        r = PredictResponse.FromString(raw)
        return {k: decode_tensor(t) for k, t in r.outputs.items()}

    styles = {"aio-proto": aio_proto, "aio-bytes": aio_bytes, "sync-future": sync_future, "aio-2ch": aio_2ch,
              "inloop": inloop}
    for rnd in range(args.rounds):
        for name in args.styles:
            rate, cpu_us = await loop(styles[name], args.conc, args.seconds)
            print(f"round {rnd} {name:12s} c={args.conc}: {rate:7.0f} calls/s  {cpu_us:6.1f} us CPU/call",
                  flush=True)
    await inloop_ch.close(grace=1.0)


def _settle(fut: asyncio.Future[bytes], call: grpc.Future) -> None:
    if fut.cancelled():
        return
    try:
        fut.set_result(call.result())
    except grpc.RpcError as error:
        fut.set_exception(error)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", default="127.0.0.1:9501")
    parser.add_argument("-c", "--conc", type=int, default=64)
    parser.add_argument("--size", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=4)
    parser.add_argument("--options", default="default", choices=sorted(OPTIONS))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--styles", nargs="+", default=["aio-proto", "aio-bytes", "sync-future", "aio-2ch"])
    parser.add_argument("--request-id", action="store_true", help="send x-request-id metadata")
    arguments = parser.parse_args()
    arguments.metadata = (("x-request-id", "0123456789abcdef0123456789abcdef"),) if arguments.request_id else None
    uvloop.run(main(arguments))
