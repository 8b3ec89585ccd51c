"""Settings, read from the environment (DESIGN.md 2.1).

Precedence, highest first: process environment, `.env` in the repo root, development keys that
`make run` generated under `var/`. Nothing here touches the database or the network.
"""

from __future__ import annotations

import ipaddress
from datetime import timedelta
from pathlib import Path

import django_stubs_ext
import environ
from django.core.exceptions import ImproperlyConfigured

django_stubs_ext.monkeypatch()

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"

env = environ.Env()
# read_env never overrides a variable that is already set, which gives the precedence above.
for env_file in (BASE_DIR / ".env", VAR_DIR / "dev-keys.env"):
    if env_file.is_file():
        env.read_env(str(env_file))

DEBUG: bool = env.bool("DJANGO_DEBUG", default=False)

SECRET_KEY: str = env.str("DJANGO_SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY is not set. Set it in the environment or in .env "
            "(`make run` generates development keys under var/)."
        )
    SECRET_KEY = "insecure-debug-only-key"  # noqa: S105 - only reachable with DJANGO_DEBUG on

# Fernet key(s) for connection secrets; comma-separated to rotate (the first one encrypts).
VMX_ENCRYPTION_KEY: str = env.str("VMX_ENCRYPTION_KEY", default="")

ALLOWED_HOSTS: list[str] = env.list("DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS: list[str] = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "axes",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "connections",
    "gateway",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Before AxesMiddleware, so the lockout page it substitutes gets the header too.
    "vmx_project.security.content_security_policy",
    "vmx_project.security.query_nul_refused",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes requires: turns a refused login into the lockout page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "vmx_project.urls"
# SDKs post to exact paths; a redirect to a slashed URL would drop the POST body.
APPEND_SLASH = False

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

ASGI_APPLICATION = "vmx_project.asgi.application"
WSGI_APPLICATION = "vmx_project.wsgi.application"

DATABASES = {"default": env.db_url("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Several gunicorn workers write audit batches concurrently: WAL lets readers run beside the
    # writer, IMMEDIATE takes the write lock at BEGIN (no deadlocking lock upgrades) and the busy
    # timeout makes a second writer wait instead of failing with "database is locked".
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            "transaction_mode": "IMMEDIATE",
            "timeout": 30,
        }
    )
    if DATABASES["default"]["NAME"] not in ("", ":memory:"):
        Path(DATABASES["default"]["NAME"]).parent.mkdir(parents=True, exist_ok=True)
else:
    DATABASES["default"].setdefault("CONN_MAX_AGE", 60)
    DATABASES["default"].setdefault("CONN_HEALTH_CHECKS", True)
    if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
        # A database host that does not answer must fail a connection in seconds, not hang the
        # audit writer or a configuration refresh until the worker is killed.
        DATABASES["default"].setdefault("OPTIONS", {}).setdefault("connect_timeout", 5)

REDIS_URL: str = env.str("REDIS_URL", default="")
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# Admin login throttling (django-axes): the first backend refuses a locked-out username+address
# before the password is checked. Attempts live in the database, so every instance sharing it
# enforces the same lock. API keys on /v1/ never go through Django authentication.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
    # Workspace roles (DESIGN.md 2.15): user.has_perm(perm, obj) for objects of an environment.
    "connections.tenancy.TenancyBackend",
]
AXES_FAILURE_LIMIT = 5
AXES_COOLOFF_TIME = timedelta(minutes=15)
# Per username *and* address: someone failing on an admin's name elsewhere cannot lock that admin
# out. Reset on success, and a failure during the lock restarts the cool-off (django-axes default).
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
# The gateway's one client-address rule: X-Forwarded-For only from VMX_TRUSTED_PROXIES (uvicorn's
# own proxy-header rewriting is off, vmx_project/workers.py).
AXES_CLIENT_IP_CALLABLE = "vmx_project.security.client_address"
AXES_LOCKOUT_CALLABLE = "vmx_project.security.lockout_response"

# Content-Security-Policy for every page Django serves (the admin). Same name and shape as Django
# 6.0's built-in setting, so upgrading means swapping vmx_project.security for Django's middleware.
# The admin needs no inline script or style, so neither is allowed (Django's changelist adds an
# inline <style> only for a ModelAdmin that turns off both action bars; keep the bars on).
SECURE_CSP: dict[str, list[str]] = {
    "default-src": ["'self'"],
    "script-src": ["'self'"],
    "style-src": ["'self'"],
    "img-src": ["'self'"],
    "object-src": ["'none'"],
    "base-uri": ["'none'"],
    "form-action": ["'self'"],
    "frame-ancestors": ["'none'"],
}

# The management API (DESIGN.md 2.11, docs/architecture.md): staff users with a management token
# (connections.ManagementToken, stored as a digest) or the
# admin's session; Django's model permissions decide each call. The /v1/ client endpoints are not
# DRF views and none of this applies to them.
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "connections.api.auth.ManagementTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["connections.api.base.StaffModelPermissions"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["connections.api.base.JSONDocumentParser"],
    "EXCEPTION_HANDLER": "connections.api.base.api_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "VM-X gateway management API",
    "DESCRIPTION": (
        "Connections, AI resources, API keys, pricing, audit, usage, capacity and the whole "
        "configuration as one document. Authenticate with `Authorization: Token <key>` "
        "(`python manage.py vmx_token create USER`) or the admin's session; staff users only."
    ),
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI's files come from the drf-spectacular-sidecar app, served by the gateway itself:
    # the docs work on a machine with no internet access and under the admin's CSP.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
}

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = VAR_DIR / "static"

# Bodies are size-checked from Content-Length by the gateway views (DESIGN.md 2.4); Django's own
# limit would otherwise turn a large vision/PDF request into an HTML 400 page.
VMX_MAX_BODY_BYTES: int = env.int("VMX_MAX_BODY_BYTES", default=32 * 1024 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = VMX_MAX_BODY_BYTES

# Seconds a client has to send a complete request (headers and body) once it connects or starts
# its next request; slower or idle connections are closed (408 where possible) so they cannot pile
# up and hold worker sockets. Enforced by gateway.asgi.protocol, before Django; 0 disables.
VMX_CLIENT_TIMEOUT: float = env.float("VMX_CLIENT_TIMEOUT", default=30.0)

# Capacity limits (DESIGN.md 2.10). Counters live in Redis when REDIS_URL is set, else in the
# database. When the store cannot be reached requests are served uncounted (fail open) unless this
# is set, which answers 503 instead.
VMX_CAPACITY_FAIL_CLOSED: bool = env.bool("VMX_CAPACITY_FAIL_CLOSED", default=False)
# After the limits' Redis fails to answer (refused, lost, timed out), a worker does not ask it again
# for this many seconds: requests get the rule above at once instead of each waiting for the
# timeout; then one request probes it. 0 asks every time.
VMX_CAPACITY_BREAKER_SECONDS: float = env.float("VMX_CAPACITY_BREAKER_SECONDS", default=5.0)
# A limit with a dimension (`source-ip`, `metadata`) keeps a counter per value: at most this many
# distinct values per limit and window; a request bringing one more is refused (429). 0: no bound.
VMX_CAPACITY_MAX_VALUES: int = env.int("VMX_CAPACITY_MAX_VALUES", default=10_000)
# Learned upstream limits (DESIGN.md 2.10): the longest an upstream's `x-ratelimit-reset-*` may keep a
# connection x model skipped (a reset of `8760h` would otherwise switch it off for a year), and how
# long the last limits seen are kept for the admin once nothing more is heard of them.
VMX_UPSTREAM_LIMIT_MAX_WAIT_SECONDS: float = env.float("VMX_UPSTREAM_LIMIT_MAX_WAIT_SECONDS", default=300.0)
VMX_UPSTREAM_LIMITS_RETENTION_DAYS: int = env.int("VMX_UPSTREAM_LIMITS_RETENTION_DAYS", default=7)
# Addresses or networks of the proxies in front of the gateway (comma-separated, e.g.
# 10.0.0.0/8,127.0.0.1). Only when the peer is one of them does the client address (audit,
# `source-ip` limits) come from X-Forwarded-For's first hop; otherwise it is the peer itself.
VMX_TRUSTED_PROXIES: list[str] = env.list("VMX_TRUSTED_PROXIES", default=[])
try:
    _TRUSTED_NETWORKS = [
        ipaddress.ip_network(entry.strip(), strict=False) for entry in VMX_TRUSTED_PROXIES if entry.strip()
    ]
except ValueError as _exc:
    raise ImproperlyConfigured(f"VMX_TRUSTED_PROXIES: {_exc}") from None

# TLS ends in front of the app (DESIGN.md 2.1): these stay off unless asked for.
SECURE_SSL_REDIRECT: bool = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=False)
SECURE_HSTS_SECONDS: int = env.int("DJANGO_SECURE_HSTS_SECONDS", default=0)
SESSION_COOKIE_SECURE: bool = env.bool("DJANGO_SESSION_COOKIE_SECURE", default=False)
CSRF_COOKIE_SECURE: bool = env.bool("DJANGO_CSRF_COOKIE_SECURE", default=False)
if env.bool("DJANGO_BEHIND_TLS_PROXY", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# How often a worker checks whether the configuration changed elsewhere (seconds). Workers see a
# change made anywhere within twice this.
VMX_CONFIG_REFRESH_SECONDS: float = env.float("VMX_CONFIG_REFRESH_SECONDS", default=1.0)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("VMX_LOG_LEVEL", default="INFO")},
    "loggers": {
        "django": {"level": "WARNING"},
        # 4xx answers are normal traffic for a gateway; they are in the audit, not the log.
        "django.request": {"level": "ERROR"},
        # One INFO line per upstream request is noise on the hot path.
        "httpx2": {"level": "WARNING"},
        "openai": {"level": "WARNING"},
        "anthropic": {"level": "WARNING"},
        # Failed logins and lockouts are WARNING; the startup banner and each good login are not.
        "axes": {"level": "WARNING"},
    },
}

# Store request/response bodies in audit records (inline base64 payloads are summarised).
VMX_AUDIT_BODIES: bool = env.bool("VMX_AUDIT_BODIES", default=False)
# Audit records that cannot be written when the server stops (database down) wait here and are
# written at the next start.
VMX_AUDIT_SPOOL_DIR: str = env.str("VMX_AUDIT_SPOOL_DIR", default=str(VAR_DIR / "audit-spool"))

# Retention (DESIGN.md 2.12): audit records and rollups older than this many days are
# deleted daily by the server itself (and by `manage.py vmx_audit_purge`); 0 keeps them forever.
VMX_AUDIT_RETENTION_DAYS: int = env.int("VMX_AUDIT_RETENTION_DAYS", default=30)
VMX_ROLLUP_RETENTION_DAYS: int = env.int("VMX_ROLLUP_RETENTION_DAYS", default=400)

# /metrics answers loopback clients; with this set, also anyone sending `Authorization: Bearer <it>`.
VMX_METRICS_TOKEN: str = env.str("VMX_METRICS_TOKEN", default="")

# Anthropic streams: a `ping` event after this many seconds without upstream bytes (spec 3.3).
VMX_STREAM_PING_SECONDS: float = env.float("VMX_STREAM_PING_SECONDS", default=15.0)
