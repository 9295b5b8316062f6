"""Bad configuration stops every command at once with one JSON log line and exit status 2, before
any server, worker or embedded database starts."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.core.secret_box import SecretKeysMissing, box
from app.core.settings import DEVELOPMENT_SECRET_KEY, Settings

GUANXI = str(Path(sys.executable).parent / "guanxi")
SECRET = "s" * 40


def _run(command: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("GUANXI_") and k != "DATABASE_URL"}
    return subprocess.run(
        [GUANXI, command], env={**base, **env}, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize("command", ["serve", "worker", "migrate"])
@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"GUANXI_ENVIRONMENT": "production", "DATABASE_URL": "postgresql+asyncpg://h/db"}, "GUANXI_JWT_SECRET"),
        (
            {"GUANXI_ENVIRONMENT": "production", "GUANXI_JWT_SECRET": "short", "DATABASE_URL": "postgresql://h/db"},
            "GUANXI_JWT_SECRET",
        ),
        ({"GUANXI_ENVIRONMENT": "production", "GUANXI_JWT_SECRET": SECRET}, "DATABASE_URL"),
        (
            {
                "GUANXI_ENVIRONMENT": "production",
                "GUANXI_JWT_SECRET": SECRET,
                "DATABASE_URL": "postgresql://h/db",
                "GUANXI_SECRET_KEYS": DEVELOPMENT_SECRET_KEY,
            },
            "GUANXI_SECRET_KEYS",
        ),
        ({"GUANXI_SECRET_KEYS": "not-a-fernet-key"}, "GUANXI_SECRET_KEYS"),
        ({"GUANXI_DB_POOL_SIZE": "many"}, "GUANXI_DB_POOL_SIZE"),
    ],
)
def test_bad_configuration_is_one_log_line_and_exit_2(
    command: str, env: dict[str, str], says: str, tmp_path: Path
) -> None:
    result = _run(command, GUANXI_DATA_DIR=str(tmp_path), **env)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    entry = json.loads(lines[0])
    assert entry["level"] == "error" and says in entry["message"]
    # Nothing was started: no embedded database folder was made.
    assert not any(tmp_path.iterdir())


def test_migrate_speaks_in_json_log_lines(database_url: str, tmp_path: Path) -> None:
    result = _run("migrate", DATABASE_URL=database_url, GUANXI_DATA_DIR=str(tmp_path))
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stderr.strip().splitlines()]
    assert lines and all(entry["time"].endswith("Z") for entry in lines)
    assert lines[-1]["message"] == "schema migrated" and lines[-1]["revision"] == "head"
    assert result.stdout == ""


def test_production_without_secret_keys_runs_but_stores_and_opens_no_channel_secret() -> None:
    """A deployment that sends nothing needs no key: it starts, and sealing or opening a secret is a
    503 naming the setting (with Retry-After, as every 503); outside production a development key."""
    production = Settings(environment="production", jwt_secret=SECRET, database_url="postgresql://h/db")
    assert production.secret_keys is None
    with pytest.raises(SecretKeysMissing) as refused:
        box(production).seal({"password": "x"})
    assert refused.value.status == 503 and "GUANXI_SECRET_KEYS" in refused.value.detail
    with pytest.raises(SecretKeysMissing):
        box(production).open("sealed")
    development = Settings()
    assert box(development).open(box(development).seal({"password": "x"})) == {"password": "x"}
