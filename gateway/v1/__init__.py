"""The client endpoints (`/v1/`, DESIGN.md 2.4): their URLs, thin views, API-key authentication
and the error renderers, one per response shape. Nothing below the views imports this package."""
