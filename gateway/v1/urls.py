from django.urls import path, re_path

from gateway.v1 import views

# The edge (gateway.asgi.handler) resolves every /v1/ path here: the list ends with a catch-all.
urlpatterns = [
    path("v1/chat/completions", views.ChatCompletionsView.as_view(), name="chat-completions"),
    path("v1/responses", views.ResponsesView.as_view(), name="responses"),
    path("v1/messages", views.MessagesView.as_view(), name="messages"),
    path("v1/messages/count_tokens", views.CountTokensView.as_view(), name="messages-count-tokens"),
    path("v1/models", views.ModelsView.as_view(), name="models"),
    re_path(r"^v1/", views.NotFoundView.as_view(), name="v1-not-found"),
]
