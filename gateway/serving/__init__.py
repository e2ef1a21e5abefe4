"""What `gateway serve` runs, split as uvicorn splits main / server / supervisors.

- `serve.py` — the command: bind the port, start the model runtimes, serve in this process or
  through a worker pool, stop the runtimes.
- `server.py` — one process's HTTP server: bound sockets, uvicorn's `Server` with the signals
  left to the gateway, serving until SIGTERM, then the drain.
- `worker_pool.py` — `--workers N`: spawning the workers, replacing one that dies, forwarding
  SIGTERM, joining them; and what each worker runs.
- `worker_reloads.py` — the parent <-> worker links that carry one reload to every worker.
- `process.py` — a serving process's lifecycle: its event loop, SIGINT/SIGTERM, SIGHUP held
  while it starts or stops.
- `config_watch.py` — reloads asked for by SIGHUP or by a change under the config directory.

The model runtimes are supervised by gateway/supervisor.py, not here.
"""
