"""``python -m ragc`` runs the command line."""

from ragc.cli import app

app()
