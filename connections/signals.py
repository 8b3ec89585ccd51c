"""Bump the configuration revision on every change, wherever it comes from (admin, file, shell)."""

from __future__ import annotations

from typing import Any

from django.db.models import F
from django.db.models.signals import m2m_changed, post_delete, post_save
from django.dispatch import receiver

from connections.models import (
    AIResource,
    APIKey,
    CapacityEntry,
    ConfigRevision,
    Connection,
    Environment,
    ModelEntry,
    PricingEntry,
    Workspace,
)

# Workspaces and environments too: the snapshot maps tenant paths to them (DESIGN.md 2.15).
_CONFIG_MODELS = (Connection, AIResource, ModelEntry, APIKey, PricingEntry, CapacityEntry, Workspace, Environment)


def config_revision_bump() -> None:
    # The row is created by a migration; it is only missing after a test flush. Creating it and
    # then incrementing (rather than creating it with value 1) keeps concurrent first bumps counted.
    if not ConfigRevision.objects.filter(pk=1).update(value=F("value") + 1):
        ConfigRevision.objects.get_or_create(pk=1, defaults={"value": 0})
        ConfigRevision.objects.filter(pk=1).update(value=F("value") + 1)
    # This process need not wait for its next periodic check.
    from connections.selectors import config_snapshot_invalidate

    config_snapshot_invalidate()


@receiver(post_save)
@receiver(post_delete)
def _on_config_change(sender: type, **kwargs: Any) -> None:
    if sender in _CONFIG_MODELS:
        config_revision_bump()


@receiver(m2m_changed, sender=APIKey.resources.through)
def _on_key_resources_change(action: str, **kwargs: Any) -> None:
    if action.startswith("post_"):
        config_revision_bump()
