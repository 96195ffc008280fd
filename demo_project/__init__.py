"""An ordinary Celery app running on tq: ``celery -A demo_project worker`` finds
``demo_project.celery.app``; ``python -m demo_project`` runs the demo."""
