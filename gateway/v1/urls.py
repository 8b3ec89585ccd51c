from django.urls import URLPattern, URLResolver, include, path, re_path

from gateway.v1 import views

# The endpoints, on the flat paths (the key decides the environment) and under VM-X's tenant
# prefix, whose workspace and environment must be the key's (DESIGN.md 2.15). The OpenAI SDK's
# base URL is `…/v1/completion/{ws}/{env}`, the Anthropic SDK's `…/v1/completion/{ws}/{env}/anthropic`.
_anthropic: list[URLPattern | URLResolver] = [
    path("messages", views.MessagesView.as_view()),
    path("messages/count_tokens", views.CountTokensView.as_view()),
]
_tenant: list[URLPattern | URLResolver] = [
    path("chat/completions", views.ChatCompletionsView.as_view()),
    path("responses", views.ResponsesView.as_view()),
    path("models", views.ModelsView.as_view()),
    path("anthropic/", include(_anthropic)),
    path("anthropic/v1/", include(_anthropic)),
]

# The edge (gateway.asgi.handler) resolves every /v1/ path here: the list ends with a catch-all.
urlpatterns = [
    path("v1/chat/completions", views.ChatCompletionsView.as_view(), name="chat-completions"),
    path("v1/responses", views.ResponsesView.as_view(), name="responses"),
    path("v1/messages", views.MessagesView.as_view(), name="messages"),
    path("v1/messages/count_tokens", views.CountTokensView.as_view(), name="messages-count-tokens"),
    path("v1/models", views.ModelsView.as_view(), name="models"),
    path("v1/completion/<str:workspace>/<str:environment>/", include(_tenant)),
    re_path(r"^v1/", views.NotFoundView.as_view(), name="v1-not-found"),
]
