"""Test settings: the real settings with fixed development keys when none are given."""

import os

os.environ.setdefault("DJANGO_SECRET_KEY", "tests-only-secret-key-not-for-production-0123456789")
# A fixed Fernet key so encrypted fixtures stay readable between runs.
os.environ.setdefault("VMX_ENCRYPTION_KEY", "3q2wLtmXA9mD2DqS6s1sZbFq8oP1w0M3rM7Bq6J0x9E=")

from vmx_project.settings import *  # noqa: F403
