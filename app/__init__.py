"""The heart-disease prediction service (FastAPI).

``create_app(settings)`` builds the app; ``heart-api serve`` / ``python -m app``
run it with uvicorn. See docs/api.md for the endpoints.
"""

from app.main import create_app
from app.settings import Settings

__all__ = ["Settings", "create_app"]
