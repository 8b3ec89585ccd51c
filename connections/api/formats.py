"""The configuration document as YAML (`application/yaml`, `text/yaml`), both ways, for the
management API's `config/` (JSON bodies are `base.JSONDocumentParser`'s).
"""

from __future__ import annotations

from typing import Any

from rest_framework import serializers
from rest_framework.parsers import BaseParser
from rest_framework.renderers import BaseRenderer

from connections.api.base import NON_FIELD
from connections.config_export import config_yaml_dump
from connections.config_file import ConfigFileError, config_text_parse


class YAMLConfigRenderer(BaseRenderer):
    """`?format=yaml`: the file `vmx_export` writes (secrets masked)."""

    media_type = "application/yaml"
    format = "yaml"
    charset = "utf-8"

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None) -> bytes:
        return config_yaml_dump(data).encode()


class YAMLConfigParser(BaseParser):
    """A config file as the body (`Content-Type: application/yaml`), as `vmx_apply` reads one,
    but without YAML aliases (a few hundred bytes of them expand to gigabytes)."""

    media_type = "application/yaml"

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        try:
            return config_text_parse(stream.read().decode("utf-8"), source="the request body", allow_aliases=False)
        except UnicodeDecodeError as exc:
            raise serializers.ValidationError({NON_FIELD: ["The body is not UTF-8 text."]}) from exc
        except ConfigFileError as exc:
            raise serializers.ValidationError({NON_FIELD: exc.problems}) from exc


class TextYAMLConfigParser(YAMLConfigParser):
    media_type = "text/yaml"
