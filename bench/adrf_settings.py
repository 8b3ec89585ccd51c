"""Bench only (`bench/adrf_point.py`): the project's settings, with the URLconf of
`bench/adrf_views.py` (an adrf view on `/v1/chat/completions`) and REST framework installed."""

from vmx_project import settings as _project
from vmx_project.settings import *  # noqa: F403

_apps: list[str] = list(_project.INSTALLED_APPS)
INSTALLED_APPS = _apps if "rest_framework" in _apps else [*_apps, "rest_framework"]
ROOT_URLCONF = "adrf_views"

# REST framework configured as a /v1/ API would be: JSON only (no browsable API, no form parsers);
# throttles and versioning are its defaults (none). The view sets its own authentication and
# permission classes. The project's own REST_FRAMEWORK (for its management API, if any) is left out.
REST_FRAMEWORK = {
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
}
