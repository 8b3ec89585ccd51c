"""The `--environment WORKSPACE/ENVIRONMENT` and `--workspace WORKSPACE` options of the commands
(DESIGN.md 2.15): checked with the names' one rule, and every complaint names the flag."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.management.base import CommandError, CommandParser

from connections.models import Environment, environment_default, tenant_name_error
from connections.services import tenant_label_parse

ENVIRONMENT_METAVAR = "WORKSPACE/ENVIRONMENT"


def environment_label_check(label: str, *, flag: str = "--environment") -> tuple[str, str]:
    """(workspace, environment) of `label`, or a `CommandError` naming `flag` and what is wrong."""
    try:
        return tenant_label_parse(label)
    except ValidationError as exc:
        raise CommandError(f"{flag} {label!r}: {' '.join(exc.messages)}") from exc


def environment_option_get(label: str | None, *, flag: str = "--environment") -> Environment:
    """The existing environment `label` names (None: `default/default`); a `CommandError` naming
    `flag` when the label is malformed or no such environment exists."""
    if label is None:
        return environment_default()
    workspace, name = environment_label_check(label, flag=flag)
    environment = Environment.objects.select_related("workspace").filter(workspace__name=workspace, name=name).first()
    if environment is None:
        raise CommandError(f"{flag} {label!r}: no environment '{name}' in workspace '{workspace}'")
    return environment


def records_scope_add_arguments(parser: CommandParser, *, what: str) -> None:
    """`--workspace` or `--environment` (one of them) to narrow `what` to a workspace or an environment."""
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "--workspace", metavar="WORKSPACE", help=f"Only {what} of this workspace's environments, e.g. acme."
    )
    scope.add_argument(
        "--environment", metavar=ENVIRONMENT_METAVAR, help=f"Only {what} of this environment, e.g. acme/prod."
    )


def records_scope_get(*, workspace: str | None, environment: str | None) -> tuple[str | None, str | None]:
    """(workspace, environment) names to filter records by; None: not filtered. Records keep the
    names they were made with, so a scope need not exist any more (a deleted environment's records
    are still there); it must only be well formed."""
    if environment is not None:
        return environment_label_check(environment)
    if workspace is not None:
        error = tenant_name_error(workspace)
        if error is not None:
            raise CommandError(f"--workspace {workspace!r}: {error}")
    return workspace, None
