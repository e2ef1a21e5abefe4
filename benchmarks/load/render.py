"""Render results/results.md from the raw results of run_all.sh.

usage: render.py results.tsv extra.tsv env.md notes.txt > results.md
With several repeats (REPEAT>1) each row shows medians over repeats and the req/s range;
the target ratios use the medians.
"""
import csv
import os
import statistics
import sys

tsv, extra_tsv, env, notes = sys.argv[1:5]
KEY = ("system", "api", "payload", "conc")


def read(path):
    if not os.path.exists(path):
        return ""
    with open(path) as f:
        return f.read().strip()


def table(path):
    with open(path) as f:
        return list(csv.DictReader(f, delimiter="\t"))


groups = {}
for r in table(tsv):
    groups.setdefault(tuple(r[k] for k in KEY), []).append(r)
reps = max((len(v) for v in groups.values()), default=1)
extra = {}
if os.path.exists(extra_tsv):
    for r in table(extra_tsv):
        extra[(r["section"], r["key"])] = r["value"]


def values(rows, col):
    return [float(r[col]) for r in rows if r[col] not in ("", "FAILED")]


def med(rows, col, fmt):
    vals = values(rows, col)
    return fmt % statistics.median(vals) if vals else "FAILED"


def metric(system_prefix, payload, conc, col="rps"):
    for (system, _api, p, c), rows in groups.items():
        if system.startswith(system_prefix) and p == payload and c == str(conc):
            vals = values(rows, col)
            return statistics.median(vals) if vals else None
    return None


print("# Gateway and peers, one run\n")
print("Servers pinned to CPU 0 (`taskset -c 0`), wrk pinned to CPU 1 (`taskset -c 1`); a gateway's "
      "backend (embedded runtime or gRPC model server) on CPU 1 as well. Closed loop, one "
      "connection per unit of concurrency. small = `{\"number\":[1]}`; medium = 1000 float32 "
      "values, each system in its own JSON format. cpu0/cpu1 = busy % of each core over the "
      "measured window.\n")
if reps > 1:
    print(f"{reps} repeats: medians over repeats; 'req/s range' = min-max.\n")
more = " req/s range |" if reps > 1 else ""
print(f"| system | api | payload | conc | req/s | p50 ms | p99 ms | errors | cpu0 % | cpu1 % |{more}")
print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if reps > 1 else ""))
for key, rows in groups.items():
    ok = values(rows, "rps")
    cells = [*key, med(rows, "rps", "%.0f"), med(rows, "p50_ms", "%.2f"), med(rows, "p99_ms", "%.2f"),
             str(sum(int(r["errors"] or 0) for r in rows)),
             med(rows, "cpu0_pct", "%.0f"), med(rows, "cpu1_pct", "%.0f")]
    if reps > 1:
        cells.append(f"{min(ok):.0f}-{max(ok):.0f}" if ok else "")
    print("| " + " | ".join(cells) + " |")


def ratio(a, b):
    return a / b if a is not None and b else None


def show(value, fmt="%.2f"):
    return "n/a" if value is None else fmt % value


print("\n## Targets (ratios within this run)\n")
print("| gateway | measure | target | measured | met |")
print("|---|---|---|---:|---|")
# Remote gRPC backends with defaults (G) have their own bounds against the mini-gateway: small
# c=64, and c=1 p50 in ms over the mini-gateway's.
G_BOUNDS = {"small": 1.15, "p50": 0.05}
for gw, label in (("F ", "embedded runtime"), ("H ", "embedded runtime, batching on"),
                  ("G ", "grpc.aio server"), ("G2 ", "grpc.aio server, grpcio client"),
                  ("I ", "grpc.aio server, batching on")):
    small_bound = G_BOUNDS["small"] if gw in ("G ", "G2 ") else 1.4
    for payload, peer, name, bound in (("small", "E ", "mini-gateway", small_bound),
                                       ("small", "C ", "MLServer REST", 1.9),
                                       ("medium", "E ", "mini-gateway", 1.0),
                                       ("medium", "C ", "MLServer REST", 1.6)):
        measure, target = f"{payload} c=64 req/s vs {name}", f">= {bound}"
        value = ratio(metric(gw, payload, 64), metric(peer, payload, 64))
        if value is None:
            continue  # a section this run left out (ONLY)
        met = "yes" if value >= bound else "no"
        print(f"| {label} | {measure} | {target} | {show(value)} | {met} |")
    for payload in ("small", "medium"):
        a, b = metric(gw, payload, 1, "p50_ms"), metric("E ", payload, 1, "p50_ms")
        if a is None or b is None:
            continue
        diff, bound = a - b, G_BOUNDS["p50"] if gw in ("G ", "G2 ") else 0.1
        met = "yes" if diff <= bound else "no"
        print(f"| {label} | {payload} c=1 p50 minus mini-gateway's (ms) | <= {bound} | {show(diff)} | {met} |")
tf_ceiling, e_rps = extra.get(("backend_ceiling", "tf_rps")), metric("E ", "small", 64)
if tf_ceiling and tf_ceiling != "failed" and e_rps:
    print(f"| grpc.aio server | its TF server's own capacity (h2load) / mini-gateway small c=64: the most G "
          f"can reach | report | {float(tf_ceiling) / e_rps:.2f} | - |")
    peers_ceiling = extra.get(("backend_ceiling", "peers_rps"))
    if peers_ceiling and peers_ceiling != "failed":
        print(f"| mini-gateway | its backend's own capacity (h2load) / its small c=64 | report | "
              f"{float(peers_ceiling) / e_rps:.2f} | - |")
f_share = ratio(metric("F ", "small", 64), metric("A ", "small", 64))
if f_share is not None:
    print(f"| embedded runtime | small c=64 req/s vs the Starlette ceiling (A) | >= 0.65 | {show(f_share)} | "
          f"{'yes' if f_share >= 0.65 else 'no'} |")
    floor = ratio(metric("E2 ", "small", 64), metric("A ", "small", 64))
    if floor is not None:
        print(f"| mini-gateway, embedded runtime | small c=64 req/s vs A: one local-wire call per request, "
              f"nothing else (the floor F is held to) | report | {show(floor)} | - |")
        print(f"| embedded runtime | small c=64 req/s vs that mini-gateway (E2) | report | "
              f"{show(ratio(metric('F ', 'small', 64), metric('E2 ', 'small', 64)))} | - |")

# The gateway's Open Inference Protocol front door (M) against MLServer's own (C): the same v2
# bodies, the same model shape, the same cores.
for payload, conc, bound in (("small", 64, 3.0), ("small", 8, None), ("small", 1, None), ("medium", 64, None)):
    value = ratio(metric("M ", payload, conc), metric("C ", payload, conc))
    if value is None:
        continue
    met = "-" if bound is None else ("yes" if value >= bound else "no")
    print(f"| v2 REST, embedded runtime | {payload} c={conc} req/s vs MLServer REST | "
          f"{'report' if bound is None else f'>= {bound}'} | {show(value)} | {met} |")


def point(system_prefix, api, conc, col="rps"):
    """The median of `col` for the small-payload row of `system_prefix` with exactly `api`."""
    for (system, a, p, c), rows in groups.items():
        if system.startswith(system_prefix) and a == api and p == "small" and c == str(conc):
            vals = values(rows, col)
            return statistics.median(vals) if vals else None
    return None


# The gRPC front door (J gRPC) against, measured beside it: the same gateway's HTTP (J HTTP),
# a bare grpc.aio Predict server (K), the bare in-loop server it runs on (L), the mini-gateway
# (E); name, api, target (None: report).
GRPC, BESIDE = "J gateway gRPC", "rest, beside J gRPC"
GRPC_PEERS = (("J gateway HTTP", BESIDE, "HTTP front door (same process)", 1.0),
              ("K ", None, "bare grpc.aio server", None),
              ("L ", None, "bare gateway.grpc_server server", None),
              ("E ", BESIDE, "mini-gateway HTTP", None))
for shape in ("64 conn x 1", "1 conn x 64"):
    api = f"grpc, {shape}"
    for peer, peer_api, name, bound in GRPC_PEERS:
        value = ratio(point(GRPC, api, 64), point(peer, peer_api or api, 64))
        if value is None:
            continue
        met = "-" if bound is None else ("yes" if value >= bound else "no")
        print(f"| gRPC front door | small c=64 ({shape}) req/s vs {name} | "
              f"{'report' if bound is None else f'>= {bound}'} | {show(value)} | {met} |")
for peer, peer_api, name, _bound in GRPC_PEERS:
    a, b = point(GRPC, "grpc, 1 conn x 1", 1, "p50_ms"), point(peer, peer_api or "grpc, 1 conn x 1", 1, "p50_ms")
    if a is not None and b is not None:
        print(f"| gRPC front door | small c=1 p50 minus {name}'s (ms) | report | {a - b:.2f} | - |")

rss = [(k, v) for (s, k), v in extra.items() if s == "memory"]
if len(rss) >= 2:
    first, last = float(rss[0][1].split()[0]), float(rss[-1][1].split()[0])
    growth = last / first
    print(f"| embedded runtime | RSS after {rss[-1][0].rsplit('_', 1)[-1]} requests / after "
          f"{rss[0][0].rsplit('_', 1)[-1]} | <= 1.10 | {growth:.3f} | {'yes' if growth <= 1.10 else 'no'} |")
w1, w2 = metric("W gateway --workers 1", "small", 64), metric("W gateway --workers 2", "small", 64)
for cfg, label in (("batching", "embedded runtime, batching on"), ("embedded", "embedded runtime")):
    for payload in ("small", "medium"):
        w1 = metric(f"W gateway --workers 1 ({cfg})", payload, 64)
        w2 = metric(f"W gateway --workers 2 ({cfg})", payload, 64)
        if w1 and w2:
            print(f"| {label} | --workers 2 / --workers 1, {payload} c=64 (all on cpu0-1) | "
                  f"report | {w2 / w1:.2f} | - |")
binary = extra.get(("large", "binary_MBps"))
if binary:
    mbps = float(binary)
    print(f"| embedded runtime | 100 MB float32, binary path MB/s | >= 1000 | {mbps:.0f} | "
          f"{'yes' if mbps >= 1000 else 'no'} |")
    if (v2 := extra.get(("large", "v2_binary_MBps"))) is not None:
        share = float(v2) / mbps
        print(f"| v2 binary tensor extension | 100 MB float32 MB/s / the binary path's | >= 0.90 | {share:.2f} | "
              f"{'yes' if share >= 0.9 else 'no'} |")
    for ceiling, label, bound in (("loopback_tcp_round_trip_MBps", "raw TCP echo on loopback", 0.5),
                                  ("starlette_ceiling_binary_MBps", "Starlette ceiling's binary echo", None)):
        if (value := extra.get(("large", ceiling))) is not None:
            share = mbps / float(value)
            met = "-" if bound is None else ("yes" if share >= bound else "no")
            print(f"| embedded runtime | binary path / {label} (same bytes, same round trip) | "
                  f"{'report' if bound is None else f'>= {bound}'} | {share:.2f} | {met} |")
    peak, before = extra.get(("large", "peak_rss_binary_kb")), extra.get(("large", "rss_before_binary_kb"))
    if peak and before:
        tensor_kb = float(extra.get(("large", "mb"), 100)) * 1e6 / 1024
        print(f"| embedded runtime | peak RSS during a binary request / the tensor's size | <= 2.5 | "
              f"{float(peak) / tensor_kb:.2f} | {'yes' if float(peak) <= 2.5 * tensor_kb else 'no'} |")
        print(f"| embedded runtime | peak RSS during it minus RSS before / the tensor's size | report | "
              f"{(float(peak) - float(before)) / tensor_kb:.2f} | - |")

# HTTP servers: the gateway of F under granian against it under uvicorn, alternating rounds.
granian, uvicorn_rps = metric("F gateway on granian", "small", 64), metric("F gateway on uvicorn", "small", 64)
if granian and uvicorn_rps:
    print(f"| granian / uvicorn | small c=64 req/s (offered if >= 1.15) | report | {granian / uvicorn_rps:.2f} | - |")
    rounds = {server: [float(v) for (s, k), v in extra.items()
                       if s == "http_servers" and k.startswith(f"{server}_r") and k.endswith("_binary_MBps")]
              for server in ("granian", "uvicorn")}
    if rounds["granian"] and rounds["uvicorn"]:
        share = statistics.median(rounds["granian"]) / statistics.median(rounds["uvicorn"])
        print(f"| granian / uvicorn | 100 MB binary MB/s (medians of the rounds) | report | {share:.2f} | - |")

if rss:
    print("\n## Memory (gateway process, embedded runtime, small payload, c=64)\n")
    for k, v in rss:
        print(f"- {k}: {v}")
large = [(k, v) for (s, k), v in extra.items() if s == "large"]
if large:
    print("\n## Large tensor (float32, one request at a time)\n")
    print("| measure | value |\n|---|---:|")
    for k, v in large:
        print(f"| {k} | {v} |")
request_log = [(k, v) for (s, k), v in extra.items() if s == "request_log"]
if request_log:
    print("\n## Request logs (every request to a CloudEvents server taking 200 ms per event, c=8)\n")
    print("| measure | value |\n|---|---:|")
    for k, v in request_log:
        print(f"| {k} | {v} |")
for title, body in (("Notes from this run", read(notes)), ("Machine and versions", read(env))):
    if body:
        print(f"\n## {title}\n\n{body}")
