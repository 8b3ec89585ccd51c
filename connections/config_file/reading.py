"""Reading a config document: a file or text as YAML (JSON is YAML), with `${VAR}` references
expanded from the environment (or refused, for documents from the network)."""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from connections.config_file.document import ConfigFileError, path_join
from gateway.core.jsonchecks import MAX_JSON_DEPTH

_REFERENCE_SPAN = re.compile(r"(?<!\$)\$\{[^}\n]*\}")
_ENV_REFERENCE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def config_file_read(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigFileError([f"{path}: {exc.strerror}"]) from exc
    return config_text_parse(text, source=str(path))


class _NoAliasLoader(yaml.SafeLoader):
    """Safe YAML without anchors' aliases: a few hundred bytes of nested aliases expand to
    gigabytes, so documents from the network may not use them (files on the server may)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise yaml.composer.ComposerError(
                None, None, "aliases (*name) are not accepted here; write the value out", event.start_mark
            )
        return super().compose_node(parent, index)


def config_text_parse(text: str, *, source: str, allow_aliases: bool = True) -> Any:
    """YAML (or JSON) text into plain data; `source` names it in a complaint (a path, "the request body")."""
    # `${VAR}` is not a valid plain scalar inside YAML flow mappings (`config: {apiKey: ${KEY}}`,
    # as DESIGN.md 2.2 writes it), so references are swapped for inert tokens while parsing and
    # restored afterwards, for env_expand to resolve with paths.
    references: dict[str, str] = {}
    nonce = secrets.token_hex(4)

    def protect(match: re.Match[str]) -> str:
        token = f"vmxref{nonce}n{len(references)}"
        references[token] = match.group(0)
        return token

    try:
        loader = yaml.SafeLoader if allow_aliases else _NoAliasLoader
        data = yaml.load(_REFERENCE_SPAN.sub(protect, text), Loader=loader)  # noqa: S506 - both are safe loaders
    except RecursionError:
        raise ConfigFileError([f"{source}: nested too deeply (at most {MAX_JSON_DEPTH} levels)"]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigFileError([f"{source}: {where}not valid YAML/JSON ({problem})"]) from exc
    return _restore(data, references, re.compile(f"vmxref{nonce}n\\d+")) if references else data


def _restore(value: Any, references: Mapping[str, str], token: re.Pattern[str]) -> Any:
    if isinstance(value, str):
        return token.sub(lambda m: references[m.group(0)], value)
    if isinstance(value, list):
        return [_restore(v, references, token) for v in value]
    if isinstance(value, dict):
        return {_restore(k, references, token): _restore(v, references, token) for k, v in value.items()}
    return value


def env_expand(value: Any, *, path: str, problems: list[str], environ: Mapping[str, str] | None) -> Any:
    """`${VAR}` and `${VAR:-default}` in every string, recursively; `$$` is a literal `$`.

    With `environ=None` (documents from the management API) `$$` still means `$`, but a reference
    is a problem: the server's environment is not the caller's to read.
    """
    if isinstance(value, str):

        def substitute(match: re.Match[str]) -> str:
            if match.group(0) == "$$":
                return "$"
            name, default = match.group(1), match.group(2)
            if environ is None:
                problems.append(
                    f"{path or '(top level)'}: environment references like ${{{name}}} are expanded only by "
                    "vmx_apply on the server; send the value itself (a literal $ before { is written $$)"
                )
                return ""
            if name in environ:
                return environ[name]
            if default is not None:
                return default
            problems.append(f"{path}: environment variable {name} is not set")
            return ""

        return _ENV_REFERENCE.sub(substitute, value)
    if isinstance(value, list):
        return [env_expand(v, path=f"{path}[{i}]", problems=problems, environ=environ) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {
            k: env_expand(v, path=path_join(path, str(k)), problems=problems, environ=environ) for k, v in value.items()
        }
    return value
