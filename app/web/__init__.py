"""The web chat page: static files served by the backend, no build step."""
