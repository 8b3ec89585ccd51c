"""Who may do what where: workspace memberships, their roles, and the one permission check the
admin, the management API and templates ask (DESIGN.md 2.15).

Invariants:
- A user's grants are read once per request (`grants_get`, one query, kept on the user object,
  which Django makes afresh for every request) and never cached across requests: a removed
  member is refused on every instance at once.
- Grants add up and nothing denies; workspaces and environments are compared by exact id, never
  by pattern. An owner's membership covers every environment of its workspace; an editor's or
  viewer's covers those listed, or all (present and future) when none are.
- Superusers may do everything. In workspace `default`, a staff user's Django model permissions
  keep granting what they always did (installs where nobody holds a membership work as before);
  they grant nothing in any other workspace. Pricing is global: members read it, writes need the
  model permission.
- An environment where the user holds no grant does not exist for them (`environment_visible`):
  callers answer 404 as for one that exists nowhere. `default`'s environments are visible to
  every staff user, who gets 403 there without a grant, as before workspaces existed.

`TenancyBackend` answers `user.has_perm(perm, obj)` from the grants for an object that belongs to
an environment (or an environment or a workspace), and `user.has_perm(perm)` (no object) with
"somewhere": querysets (`queryset_permitted`) then narrow lists to where it holds.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth.backends import BaseBackend
from django.db.models import Model, Q, QuerySet

from connections.models import DEFAULT_WORKSPACE, Environment, Membership, Workspace

APP = "connections"
CONFIGURATION_MODELS = ("connection", "airesource", "modelentry", "apikey", "capacityentry")
"""What an editor writes and a viewer reads, per environment."""
RECORD_PERMISSIONS = frozenset({"gateway.view_auditrecord", "gateway.view_upstreamratelimit"})
"""Audit, usage, capacity and the dashboard: read by every role."""
VIEW = frozenset(f"{APP}.view_{model}" for model in CONFIGURATION_MODELS) | RECORD_PERMISSIONS
WRITE = frozenset(
    f"{APP}.{action}_{model}" for model in CONFIGURATION_MODELS for action in ("add", "change", "delete")
) | {"gateway.change_upstreamratelimit"}
MANAGE = frozenset(
    {
        f"{APP}.view_workspace",
        f"{APP}.change_workspace",
        f"{APP}.view_environment",
        f"{APP}.add_environment",
        f"{APP}.change_environment",
        f"{APP}.delete_environment",
        f"{APP}.view_membership",
        f"{APP}.add_membership",
        f"{APP}.change_membership",
        f"{APP}.delete_membership",
    }
)
MEMBER = frozenset({f"{APP}.view_workspace", f"{APP}.view_environment", f"{APP}.view_membership"})
"""What every member may see of their workspace: its description, environments and members."""
PRICING_VIEW = f"{APP}.view_pricingentry"

ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    Membership.Role.VIEWER: VIEW | MEMBER,
    Membership.Role.EDITOR: VIEW | MEMBER | WRITE,
    Membership.Role.OWNER: VIEW | MEMBER | WRITE | MANAGE,
}
"""DESIGN.md 2.15's role table as Django permissions (`app_label.codename`)."""


@dataclass(frozen=True, slots=True)
class WorkspaceGrant:
    role: str
    environments: frozenset[uuid.UUID] | None
    """None: every environment of the workspace."""

    def covers(self, environment_id: uuid.UUID) -> bool:
        return self.environments is None or environment_id in self.environments


@dataclass(slots=True)
class Grants:
    """One user's grants, read once (`grants_get`)."""

    active: bool = False
    staff: bool = False
    superuser: bool = False
    by_workspace: dict[uuid.UUID, WorkspaceGrant] = field(default_factory=dict)
    default_workspace_perms: frozenset[str] = frozenset()
    """The user's Django model permissions: they hold in workspace `default` only."""

    @property
    def any_membership(self) -> bool:
        return bool(self.by_workspace)

    # -- one environment or workspace ----------------------------------------------------------

    def allows(
        self, perm: str, *, workspace_id: uuid.UUID, workspace_name: str, environment_id: uuid.UUID | None
    ) -> bool:
        """Whether `perm` holds in that environment (None: the workspace as a whole)."""
        if not self.active:
            return False
        if self.superuser:
            return True
        if workspace_name == DEFAULT_WORKSPACE and self.staff and perm in self.default_workspace_perms:
            return True
        grant = self.by_workspace.get(workspace_id)
        if grant is None or perm not in ROLE_PERMISSIONS[grant.role]:
            return False
        # The workspace as a whole: the role decides (owners alone hold what manages it).
        return environment_id is None or grant.covers(environment_id)

    def environment_visible(self, *, workspace_id: uuid.UUID, workspace_name: str, environment_id: uuid.UUID) -> bool:
        """Whether the environment exists for this user (otherwise: 404, as one that does not)."""
        if not self.active or not self.staff:
            return False
        if self.superuser or workspace_name == DEFAULT_WORKSPACE:
            return True
        grant = self.by_workspace.get(workspace_id)
        return grant is not None and grant.covers(environment_id)

    def workspace_visible(self, *, workspace_id: uuid.UUID, workspace_name: str) -> bool:
        if not self.active or not self.staff:
            return False
        return self.superuser or workspace_name == DEFAULT_WORKSPACE or workspace_id in self.by_workspace

    def anywhere(self, perm: str) -> bool:
        """Whether `perm` holds in at least one environment (lists are then narrowed to them)."""
        if not self.active:
            return False
        if self.superuser or (self.staff and perm in self.default_workspace_perms):
            return True
        return any(perm in ROLE_PERMISSIONS[grant.role] for grant in self.by_workspace.values())

    # -- querysets --------------------------------------------------------------------------------

    def environments_q(self, perm: str, *, prefix: str = "") -> Q:
        """A filter on `Environment` (or, with `prefix` such as `environment__`, on objects that
        belong to one) for the environments where `perm` holds. Matches nothing when none."""
        if not self.active:
            return Q(pk__in=[])
        if self.superuser:
            return Q()
        where = Q(pk__in=[])
        if self.staff and perm in self.default_workspace_perms:
            where |= Q(**{f"{prefix}workspace__name": DEFAULT_WORKSPACE})
        for workspace_id, grant in self.by_workspace.items():
            if perm not in ROLE_PERMISSIONS[grant.role]:
                continue
            if grant.environments is None:
                where |= Q(**{f"{prefix}workspace_id": workspace_id})
            else:
                where |= Q(**{f"{prefix}pk__in": sorted(grant.environments)})
        return where

    def visible_environments_q(self, *, prefix: str = "") -> Q:
        """A filter on the environments that exist for this user (any grant, or `default`'s)."""
        if not self.active or not self.staff:
            return Q(pk__in=[])
        if self.superuser:
            return Q()
        where = Q(**{f"{prefix}workspace__name": DEFAULT_WORKSPACE})
        for workspace_id, grant in self.by_workspace.items():
            if grant.environments is None:
                where |= Q(**{f"{prefix}workspace_id": workspace_id})
            else:
                where |= Q(**{f"{prefix}pk__in": sorted(grant.environments)})
        return where


GRANTS_ATTRIBUTE = "_vmx_grants"


def grants_get(user: Any) -> Grants:
    """The user's grants, read in one query and kept on the user object for the request."""
    cached: Grants | None = getattr(user, GRANTS_ATTRIBUTE, None)
    if cached is not None:
        return cached
    grants = Grants()
    if user is not None and getattr(user, "is_authenticated", False) and user.is_active:
        grants.active, grants.staff, grants.superuser = True, bool(user.is_staff), bool(user.is_superuser)
        if not grants.superuser:
            limits: dict[uuid.UUID, tuple[str, set[uuid.UUID]]] = {}
            rows = Membership.objects.filter(user=user).values_list("workspace_id", "role", "environments__id")
            for workspace_id, role, environment_id in rows:
                _, listed = limits.setdefault(workspace_id, (role, set()))
                if environment_id is not None:
                    listed.add(environment_id)
            grants.by_workspace = {
                workspace_id: WorkspaceGrant(
                    role, None if role == Membership.Role.OWNER or not listed else frozenset(listed)
                )
                for workspace_id, (role, listed) in limits.items()
            }
            if grants.staff:
                # Django's own model permissions (ModelBackend, cached on the user too).
                from django.contrib.auth.backends import ModelBackend

                grants.default_workspace_perms = frozenset(ModelBackend().get_all_permissions(user))
    setattr(user, GRANTS_ATTRIBUTE, grants)
    return grants


def grants_forget(user: Any) -> None:
    """Drop the grants kept on `user` (after changing its memberships in the same request)."""
    if hasattr(user, GRANTS_ATTRIBUTE):
        delattr(user, GRANTS_ATTRIBUTE)


def _where(obj: Any) -> tuple[uuid.UUID, str, uuid.UUID | None] | None:
    """(workspace id, workspace name, environment id) of an object, an environment or a workspace."""
    if isinstance(obj, Workspace):
        return obj.pk, obj.name, None
    if isinstance(obj, Environment):
        return obj.workspace_id, obj.workspace.name, obj.pk
    if isinstance(obj, Membership):
        return obj.workspace_id, obj.workspace.name, None
    environment = object_environment(obj)
    if environment is None:
        return None
    return environment.workspace_id, environment.workspace.name, environment.pk


def object_environment(obj: Any) -> Environment | None:
    """The environment a configuration object belongs to: its own, or its owner's (a model entry's
    resource, a capacity limit's connection, resource or key)."""
    if getattr(obj, "environment_id", None) is not None:
        return obj.environment  # type: ignore[no-any-return]
    for owner in ("resource", "connection", "api_key"):
        if getattr(obj, f"{owner}_id", None) is not None:
            return object_environment(getattr(obj, owner))
    return None


def user_allowed(user: Any, perm: str, obj: Any) -> bool:
    """Whether `user` holds `perm` on `obj` (an object of an environment, an environment, a
    workspace or a membership)."""
    where = _where(obj)
    if where is None:
        return False
    workspace_id, workspace_name, environment_id = where
    return grants_get(user).allows(
        perm, workspace_id=workspace_id, workspace_name=workspace_name, environment_id=environment_id
    )


def environment_visible(user: Any, environment: Environment) -> bool:
    return grants_get(user).environment_visible(
        workspace_id=environment.workspace_id, workspace_name=environment.workspace.name, environment_id=environment.pk
    )


def workspace_visible(user: Any, workspace: Workspace) -> bool:
    return grants_get(user).workspace_visible(workspace_id=workspace.pk, workspace_name=workspace.name)


def environments_permitted(user: Any, perm: str) -> QuerySet[Environment]:
    """The environments where `user` holds `perm` (e.g. an add form's choices)."""
    return Environment.objects.select_related("workspace").filter(grants_get(user).environments_q(perm))


def environments_visible(user: Any) -> QuerySet[Environment]:
    return Environment.objects.select_related("workspace").filter(grants_get(user).visible_environments_q())


def workspaces_visible(user: Any) -> QuerySet[Workspace]:
    grants = grants_get(user)
    if not grants.active or not grants.staff:
        return Workspace.objects.none()
    if grants.superuser:
        return Workspace.objects.all()
    return Workspace.objects.filter(Q(name=DEFAULT_WORKSPACE) | Q(pk__in=list(grants.by_workspace)))


def queryset_permitted(user: Any, queryset: QuerySet[Any], perm: str, *, path: str = "environment") -> QuerySet[Any]:
    """`queryset` narrowed to objects in environments where `user` holds `perm`; `path` leads
    from the model to its environment (`resource__environment` for a model entry)."""
    return queryset.filter(grants_get(user).environments_q(perm, prefix=f"{path}__"))


def records_permitted(user: Any, queryset: QuerySet[Any], perm: str = "gateway.view_auditrecord") -> QuerySet[Any]:
    """Audit records or rollups (which name their workspace and environment) narrowed to the
    environments where `user` may read them."""
    grants = grants_get(user)
    if grants.superuser and grants.active:
        return queryset
    where = Q(pk__in=[])
    pairs = environments_permitted(user, perm)
    if grants.active and grants.staff and perm in grants.default_workspace_perms:
        # By name: every record of `default`, also of an environment since deleted (or not made
        # again after a test's flush), as the model permission always granted.
        where |= Q(workspace=DEFAULT_WORKSPACE)
        pairs = pairs.exclude(workspace__name=DEFAULT_WORKSPACE)
    for workspace, environment in pairs.values_list("workspace__name", "name"):
        where |= Q(workspace=workspace, environment=environment)
    return queryset.filter(where)


class TenancyBackend(BaseBackend):
    """Answers `user.has_perm(perm, obj)` from the user's grants (AUTHENTICATION_BACKENDS, after
    Django's ModelBackend, which answers without an object from the model permissions)."""

    def has_perm(self, user_obj: Any, perm: str, obj: Model | None = None) -> bool:
        if obj is None:
            # "Somewhere": a member may open the lists, which querysets narrow to where it holds.
            grants = grants_get(user_obj)
            if not grants.staff:
                return False
            if perm == PRICING_VIEW:
                return grants.any_membership
            return any(perm in ROLE_PERMISSIONS[grant.role] for grant in grants.by_workspace.values())
        if perm == PRICING_VIEW:
            return grants_get(user_obj).any_membership
        return user_allowed(user_obj, perm, obj)

    def has_module_perms(self, user_obj: Any, app_label: str) -> bool:
        """Whether the admin's index shows the app to a member (ModelBackend answers for the
        model permissions): Django skips a backend without this method, so members saw no app."""
        grants = grants_get(user_obj)
        if not grants.staff:
            return False
        prefix = f"{app_label}."
        return any(
            perm.startswith(prefix) for grant in grants.by_workspace.values() for perm in ROLE_PERMISSIONS[grant.role]
        )
