"""`manage.py vmx_token create|revoke|list`: management API tokens (only their digests are stored)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib.auth.models import User
from django.core.management.base import BaseCommand, CommandError, CommandParser

from connections.api.auth import DEFAULT_TOKEN_LIFETIME, management_token_create, management_tokens_revoke
from connections.models import ManagementToken

MAX_DAYS = 36_500
"""The longest lifetime a token may be given (a hundred years; more overflows the calendar)."""


class Command(BaseCommand):
    help = "Create (printed once), revoke or list management API tokens."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        create = sub.add_parser("create", help="A new token for USER, printed this once.")
        create.add_argument("username")
        create.add_argument(
            "--days",
            type=int,
            default=DEFAULT_TOKEN_LIFETIME.days,
            help=f"Days until it expires (default {DEFAULT_TOKEN_LIFETIME.days}; 0: never).",
        )
        create.add_argument("--description", default="")
        revoke = sub.add_parser("revoke", help="Revoke USER's tokens, or one by its prefix.")
        revoke.add_argument("username", nargs="?")
        revoke.add_argument("--prefix")
        sub.add_parser("list", help="Every token: prefix, user, expiry, revoked.")

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        if action == "list":
            for t in ManagementToken.objects.select_related("user"):
                self.stdout.write(
                    f"{t.prefix}  {t.user.username}  expires={t.expires_at or 'never'}  revoked={t.revoked_at or '-'}"
                )
            return
        user = None
        if options.get("username"):
            user = User.objects.filter(username=options["username"]).first()
            if user is None:
                raise CommandError(f"no user {options['username']!r}")
        if action == "create":
            assert user is not None
            if not 0 <= options["days"] <= MAX_DAYS:
                raise CommandError(f"--days must be from 0 (never expires) to {MAX_DAYS}")
            lifetime = timedelta(days=options["days"]) if options["days"] else None
            token, value = management_token_create(user=user, lifetime=lifetime, description=options["description"])
            self.stdout.write(f"{value}\n")
            self.stderr.write(
                f"Token {token.prefix}… for {user.username}, expires {token.expires_at or 'never'}. "
                "Store it now: it is never shown again."
            )
            return
        if user is None and not options.get("prefix"):
            raise CommandError("give a username, --prefix, or both")
        count = management_tokens_revoke(user=user, prefix=options.get("prefix"))
        self.stdout.write(f"Revoked {count} token(s).\n")
