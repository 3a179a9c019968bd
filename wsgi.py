"""The WSGI entry point: `gunicorn wsgi:app`."""

from wickson_batch import create_app

app = create_app()
