"""`gateway logs show|replay|warmup`: read request logs (TFRecord files of PredictionLog), replay
them against a running gateway, turn them into warmup files (gateway/requestlog/)."""

from __future__ import annotations

import argparse
from pathlib import Path

from gateway.cli.common import API_KEY_HELP, URL_HELP, Commands, client_api_key, client_url, count, http_url, seconds
from gateway.requestlog import replay, show, warmup_file
from modelfolder.warmup import MAX_RECORDS as MAX_WARMUP_RECORDS


def add_parser(commands: Commands) -> None:
    logs = commands.add_parser("logs", help="read and replay request logs (TFRecord files of PredictionLog)",
                               description="Read the request logs a file sink wrote, or any TF Serving warmup "
                                           "file, and replay them against a running gateway.",
                               epilog="examples:\n  gateway logs show logs/\n  gateway logs replay logs/ --url "
                                      "http://127.0.0.1:8000\n\neach action's --help gives its exit status",
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    logs.set_defaults(run=run)
    actions = logs.add_subparsers(dest="logs_command", required=True)
    show_command = actions.add_parser(
        "show", help="print the records of a log file readably or as JSON lines",
        description="Print each record of FILE: a header (record number, offset and, from the index beside the "
                    "file, request id, time, status, application/stage/variant, duration), the request and the "
                    "outputs in protobuf text format, each tensor decoded (summarised). FILE may be a "
                    "`.tfrecord`, a `.tfrecord.partial` still being written (a truncated last record is left "
                    "out), a warmup file, or a directory (its `.tfrecord` and `.tfrecord.partial` files in the "
                    "order they were opened). Exit status: 0 all read, 1 a corrupt record after some were "
                    "printed, 2 nothing could be read.")
    show_command.add_argument("file", type=Path, metavar="FILE", help="log file, warmup file or log directory")
    show_command.add_argument("--limit", type=count, metavar="N", help="only the first N records")
    show_command.add_argument("--json", action="store_true", help="one JSON object per record and line "
                              "(index fields, model_spec, inputs and outputs as native JSON values)")
    replay_command = actions.add_parser(
        "replay", help="send the logged requests to a running gateway and compare the answers",
        description="Send each record's inputs to the gateway at --url, one request at a time, at most --rate "
                    "a second: to the model route of the model and version that ran (TF Serving's REST route for a "
                    "signature other than the model's default), or with --application to that application's "
                    "route (only the records of its stage 1 when the file has an index). "
                    "Each answer's outputs are compared with the logged ones (exact for integers and "
                    "strings, numpy.isclose for floats). Exit status: 0 every request answered 2xx, 1 "
                    "otherwise (or nothing sent), 2 bad arguments or a file that cannot be read, 130 interrupted.")
    replay_command.add_argument("file", type=Path, metavar="FILE", help="log file, warmup file or log directory")
    replay_command.add_argument("--url", type=http_url, default=None, help=URL_HELP)
    replay_command.add_argument("--rate", type=_rate, default=10.0, metavar="R",
                                help=f"requests per second at most (default 10, at most {replay.MAX_RATE:g})")
    replay_command.add_argument("--limit", type=count, metavar="N", help="send at most N requests")
    replay_command.add_argument("--application", metavar="NAME", help="send to this application's route instead")
    replay_command.add_argument("--api-key", metavar="KEY", default=None, help=API_KEY_HELP)
    replay_command.add_argument("--timeout", type=seconds, default=10.0, metavar="S",
                                help="seconds to wait for each answer (default 10)")
    warmup_command = actions.add_parser(
        "warmup", help="write a TF Serving warmup file of a model's answered calls",
        description="Write the answered calls of FILE (index status 200; every record of a file without an "
                    "index, with a warning) of one model to --out as a TF Serving warmup file (TFRecord of "
                    "PredictionLog, as assets.extra/tf_serving_warmup_requests), at most --limit of them. The "
                    "file is written as PATH.partial and renamed when complete. Exit status: 0 written, 1 "
                    "nothing to write or a corrupt record (the records before it are written), 2 bad arguments, "
                    "a file that cannot be read, or calls of several models without --model.")
    warmup_command.add_argument("file", type=Path, metavar="FILE", help="log file or log directory")
    warmup_command.add_argument("--out", required=True, type=Path, metavar="PATH", help="the warmup file to write")
    warmup_command.add_argument("--model", type=_model_choice, metavar="NAME[:VERSION]",
                                help="only this model's calls (needed when the log holds several models')")
    warmup_command.add_argument("--limit", type=_warmup_count, default=MAX_WARMUP_RECORDS, metavar="N",
                                help=f"at most N records (default and at most {MAX_WARMUP_RECORDS}, "
                                     "TF Serving's limit)")


def run(args: argparse.Namespace) -> int:
    if args.logs_command == "show":
        return show.show(args.file, limit=args.limit, as_json=args.json)
    if args.logs_command == "warmup":
        try:
            return warmup_file.write_warmup(args.file, args.out, model=args.model, limit=args.limit)
        except KeyboardInterrupt:  # nothing is left but the .partial file, which is removed
            return 130
    target = replay.Target(client_url(args), args.application, client_api_key(args), args.timeout)
    return replay.replay(args.file, target, rate=args.rate, limit=args.limit)


def _warmup_count(text: str) -> int:
    """A whole number in [1, MAX_RECORDS] (argparse type)."""
    value = count(text)
    if value > MAX_WARMUP_RECORDS:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_WARMUP_RECORDS} (TF Serving's limit of "
                                         f"warmup records), got {text!r}")
    return value


def _model_choice(text: str) -> warmup_file.ModelChoice:
    try:
        return warmup_file.model_choice(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _rate(text: str) -> float:
    try:
        return replay.rate_per_second(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
