"""The edge: what runs before Django sees a request."""
