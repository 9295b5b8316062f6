"""A front end's generated client: TypeScript types generated from the document with openapi-typescript
and a strict program of the main flows (tests/typescript/flows.ts) compiled against them. It fails
when a body a client reads is `unknown` (an untyped 2xx schema anywhere), when a flow's request no
longer fits the document, or when the document does not generate. The tools' versions are pinned by
tests/typescript/package-lock.json; `npm ci` installs them once per lock into the git-ignored
tests/typescript/node_modules."""

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from app.core.settings import get_settings
from app.main import create_app

CLIENT = Path(__file__).parent / "typescript"
MODULES = CLIENT / "node_modules"
STAMP = MODULES / ".installed-lock-sha256"
GENERATED = CLIENT / "generated"

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or shutil.which("npm") is None or shutil.which("npx") is None,
    reason="node and npm are not installed: the generated TypeScript client cannot be built",
)


def _run(*command: str) -> None:
    done = subprocess.run(command, cwd=CLIENT, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}"


def _install() -> None:
    lock = hashlib.sha256((CLIENT / "package-lock.json").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == lock:
        return
    _run("npm", "ci", "--no-audit", "--no-fund", "--loglevel=error")
    STAMP.write_text(lock)


def test_a_strict_typescript_client_generated_from_the_document_compiles() -> None:
    _install()
    GENERATED.mkdir(exist_ok=True)
    # The document needs no database.
    application = create_app(get_settings(), database_url="postgresql+asyncpg://nobody@127.0.0.1:1/none")
    (GENERATED / "openapi.json").write_text(json.dumps(application.openapi()))
    # Fields with a default are optional in a request; a response lists every field it always sends
    # as required, so they stay required there.
    _run(
        "npx",
        "--no-install",
        "openapi-typescript",
        "generated/openapi.json",
        "--default-non-nullable",
        "false",
        "--output",
        "generated/guanxi.ts",
    )
    _run("npx", "--no-install", "tsc", "--strict", "--noEmit", "--project", "tsconfig.json")
