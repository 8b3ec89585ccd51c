"""Production serving: `gunicorn -c gunicorn.conf.py` from the repo root (DESIGN.md 2.1).

Precedence: command line (`--bind`, `--workers`) > VMX_BIND / VMX_WORKERS > the defaults here.
"""

import os
import resource
import shutil
import tempfile
from typing import Any

# Every open stream holds two sockets (client and upstream): lift the soft open-file limit (often
# 1,024) to the hard limit so thousands of concurrent streams do not fail with EMFILE.
_soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
_wanted = 65_536 if _hard == resource.RLIM_INFINITY else min(_hard, 65_536)
if _soft < _wanted:
    resource.setrlimit(resource.RLIMIT_NOFILE, (_wanted, _hard))

wsgi_app = "vmx_project.asgi:application"
worker_class = "vmx_project.workers.GatewayUvicornWorker"
bind = os.environ.get("VMX_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("VMX_WORKERS", str(os.cpu_count() or 1)))

# SIGTERM drains: open streams get this long to finish before workers are killed.
graceful_timeout = int(os.environ.get("VMX_GRACEFUL_TIMEOUT", "90"))
# Seconds without a heartbeat before the master restarts a worker (not a request timeout).
timeout = 120
# Longer than typical load-balancer idle timeouts, so the proxy closes idle connections first.
keepalive = 75

accesslog = os.environ.get("VMX_ACCESS_LOG") or None
errorlog = "-"
loglevel = os.environ.get("VMX_LOG_LEVEL", "info").lower()

# gunicorn's runtime control socket is not used; without it several instances never collide.
control_socket_disable = True

# Prometheus metrics across workers (gateway/observability/metrics.py): each worker keeps its values in files in
# this directory, and /metrics sums them. A fresh directory per server start (counters restart at
# zero, which Prometheus expects of a restart), removed when the server stops; set
# PROMETHEUS_MULTIPROC_DIR to choose it (its files are then cleared at start).
_metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
if _metrics_dir:
    os.makedirs(_metrics_dir, exist_ok=True)
    for _name in os.listdir(_metrics_dir):
        if _name.endswith(".db"):
            os.remove(os.path.join(_metrics_dir, _name))
    _owns_metrics_dir = False
else:
    _metrics_dir = tempfile.mkdtemp(prefix="vmx-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = _metrics_dir
    _owns_metrics_dir = True


def child_exit(server: Any, worker: Any) -> None:
    """A dead worker's live gauges (open streams, audit queue) stop counting; its counters stay."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


def on_exit(server: Any) -> None:
    if _owns_metrics_dir:
        shutil.rmtree(_metrics_dir, ignore_errors=True)
