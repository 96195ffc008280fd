"""An ordinary Celery app running on tq (see celery.py)."""

from .celery import app

__all__ = ["app"]
