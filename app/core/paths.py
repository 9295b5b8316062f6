"""Where the project's own files are, wherever the process was started from."""

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
ALEMBIC_INI = PROJECT_ROOT / "alembic.ini"
