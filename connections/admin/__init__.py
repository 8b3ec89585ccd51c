"""The Django admin of the configuration: importing this package registers every page.

- `tenancy`: what every page of an environment's objects shares (who sees and writes what, the
  workspace and environment columns and filters; DESIGN.md 2.15);
- `capacity`: the capacity limit inlines;
- `config`: connections, AI resources, API keys, prices, management tokens;
- `workspaces`: workspaces with their environments and members.
"""

from connections.admin import config, workspaces

__all__ = ["config", "workspaces"]
