"""ASGI entry point for process managers: `uvicorn app.asgi:app --workers N` (DATABASE_URL set)."""

from app.main import create_app

app = create_app()
