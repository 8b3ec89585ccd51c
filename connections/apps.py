from django.apps import AppConfig


class ConnectionsConfig(AppConfig):
    name = "connections"
    verbose_name = "Gateway configuration"

    def ready(self) -> None:
        from connections import checks, signals  # noqa: F401  (registers checks and receivers)
