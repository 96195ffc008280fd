"""The worker side of tq: memory recycling, heartbeats, shutdown and signals.

Each concern is one module, connected by :func:`tq_celery_ext.install`; every setting
is declared once in :mod:`.settings`.
"""
