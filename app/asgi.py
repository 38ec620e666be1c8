"""A module-level app for ASGI servers that want ``module:attribute``.

``uvicorn app.asgi:app`` builds the app from the ``HEART_*`` environment when
this module is imported. Prefer ``heart-api serve``, which also validates the
configuration and the artifact before starting workers and sets up
multi-worker metrics.
"""

from app.main import create_app

app = create_app()
