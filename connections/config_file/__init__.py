"""Config as code (DESIGN.md 2.2): read, parse, validate and apply the YAML/JSON file; writing one
is `connections.config_export`.

Invariants: a file is checked whole before anything is written, and applied in one transaction, so
an invalid file changes nothing; every complaint names its path in the file
(`resources[0].fallbackModels[1].connection: no connection 'x'`); secrets are masked on export
unless asked for, and a masked value in a file keeps the stored secret. The file describes each
object it lists whole: a connection, resource or API key without `capacity` has no limits. Export
then apply changes nothing.

`reading` (text, YAML, environment references) → `parsing` (the objects of `document`, with
paths) → `applying` (the services, in one transaction).
"""

from __future__ import annotations

from connections.config_file.applying import CHANGE_KINDS, CHANGE_STATUSES, ApplyReport, config_apply
from connections.config_file.document import (
    SECRET_MASK,
    ApiKeyDoc,
    ConfigDoc,
    ConfigFileError,
    ConnectionDoc,
    PricingDoc,
    ResourceDoc,
)
from connections.config_file.parsing import config_parse
from connections.config_file.reading import config_file_read, config_text_parse, env_expand

__all__ = [
    "CHANGE_KINDS",
    "CHANGE_STATUSES",
    "SECRET_MASK",
    "ApiKeyDoc",
    "ApplyReport",
    "ConfigDoc",
    "ConfigFileError",
    "ConnectionDoc",
    "PricingDoc",
    "ResourceDoc",
    "config_apply",
    "config_file_read",
    "config_parse",
    "config_text_parse",
    "env_expand",
]
