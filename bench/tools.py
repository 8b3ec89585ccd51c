"""The outside tools the bench needs, installed on first use: Debian's nginx, echo module and wrk
(apt-get, as root), Portkey's gateway for --peers (npm, into .tools/portkey) and hiredis for the
capacity-limits configuration D (pip --target .tools/hiredis). Plus the open-file limit.

None of them is a dependency of the gateway: .tools/ is git-ignored, and what lands there is put
on the path of only the processes that need it.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
from pathlib import Path

import upstream
from procs import REPO, TOOLS, VENV_BIN, log, run_quiet

PORTKEY_VERSION = "1.15.2"
PORTKEY_DIR = TOOLS / "portkey"
HIREDIS_VERSION = "3.5.0"
HIREDIS_DIR = TOOLS / "hiredis"


def ensure_debian_tools() -> None:
    missing = []
    if not shutil.which("nginx") and not Path("/usr/sbin/nginx").exists():
        missing.append("nginx-light")
    if not upstream.NGINX_MODULE.exists():
        missing.append("libnginx-mod-http-echo")
    if not shutil.which("wrk"):
        missing.append("wrk")
    if not missing:
        return
    if os.geteuid() != 0:
        raise SystemExit(f"missing {', '.join(missing)}: run `sudo apt-get install -y {' '.join(missing)}`")
    log(f"installing {', '.join(missing)} with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", *missing]):
        done = run_quiet(command, env=env)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")


def nginx_binary() -> str:
    return shutil.which("nginx") or "/usr/sbin/nginx"


def portkey_entry() -> Path:
    return PORTKEY_DIR / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"


def ensure_portkey() -> None:
    for tool in ("node", "npm"):
        if not shutil.which(tool):
            raise SystemExit(f"--peers needs {tool} (apt-get install -y nodejs npm)")
    package = PORTKEY_DIR / "node_modules" / "@portkey-ai" / "gateway" / "package.json"
    installed = json.loads(package.read_text()).get("version") if package.exists() else None
    if installed != PORTKEY_VERSION or not portkey_entry().exists():
        log(f"installing @portkey-ai/gateway@{PORTKEY_VERSION} into {PORTKEY_DIR.relative_to(REPO)}")
        PORTKEY_DIR.mkdir(parents=True, exist_ok=True)
        done = run_quiet(
            [
                "npm",
                "install",
                "--no-audit",
                "--no-fund",
                "--prefix",
                str(PORTKEY_DIR),
                f"@portkey-ai/gateway@{PORTKEY_VERSION}",
            ]
        )
        if done.returncode != 0 or not portkey_entry().exists():
            raise SystemExit(f"npm install failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")


def hiredis_pythonpath() -> str:
    """PYTHONPATH for a gateway that should find hiredis: .tools/hiredis before whatever was set."""
    return os.pathsep.join([str(HIREDIS_DIR), *filter(None, [os.environ.get("PYTHONPATH")])])


def ensure_hiredis() -> str | None:
    """hiredis, pinned, in .tools/hiredis (installed once); None if redis-py can use it from there,
    else why not. `--no-deps`: hiredis has none, and redis-py comes from the venv."""
    if not (HIREDIS_DIR / f"hiredis-{HIREDIS_VERSION}.dist-info").is_dir():
        log(f"installing hiredis=={HIREDIS_VERSION} into {HIREDIS_DIR.relative_to(REPO)}")
        done = run_quiet(
            [
                str(VENV_BIN / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                "--target", str(HIREDIS_DIR), "--no-deps", f"hiredis=={HIREDIS_VERSION}",
            ]
        )  # fmt: skip
        if done.returncode != 0:
            return f"pip install hiredis=={HIREDIS_VERSION} failed: {(done.stderr or done.stdout)[-300:]}"
    # redis-py decides at import time whether hiredis is there: ask it, with D's path.
    check = run_quiet(
        [str(VENV_BIN / "python"), "-c", "import redis.utils as u, sys; sys.exit(0 if u.HIREDIS_AVAILABLE else 1)"],
        timeout=60,
        env={**os.environ, "PYTHONPATH": hiredis_pythonpath()},
    )
    if check.returncode != 0:
        return f"redis-py does not find hiredis in {HIREDIS_DIR.relative_to(REPO)}: {check.stderr[-300:]}"
    return None


def raise_open_files() -> tuple[int, int]:
    """Soft limit up to 65,536 (or the hard limit, if lower and not raisable); children inherit it."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536
    if hard != resource.RLIM_INFINITY and hard < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
            hard = want
        except (ValueError, PermissionError, OSError):
            pass
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)
