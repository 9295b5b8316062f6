"""Where a process keeps its own working copy of a stored file while it reads it (an import's rows are
read from a local file by the csv module and openpyxl). Never shared: every file that another process
needs lives in PostgreSQL (app/services/files)."""

import tempfile
from pathlib import Path

from app.models import ImportJob


def scratch_dir() -> Path:
    path = Path(tempfile.gettempdir()) / "guanxi-scratch"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def local_copy(job: ImportJob) -> Path:
    """The working copy of an import's upload, made by the job engine before the rows are read."""
    return scratch_dir() / f"import-{job.workspace_id}-{job.id}.{job.file_format}"
