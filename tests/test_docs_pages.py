"""`/docs` and `/redoc` work with no outside network: their assets come from the app itself, and a
real headless Chromium that can reach nothing but this machine renders the operations."""

import asyncio
import re
import shutil
from collections.abc import AsyncIterator

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from app.main import DOCS_ASSETS
from tests.receiver import free_port

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
PAGES = ("/docs", "/redoc")


def _asset_urls(html: str) -> list[str]:
    return re.findall(r"""(?:src|href)=["']([^"']+)["']""", html)


@pytest.mark.parametrize("page", PAGES)
async def test_docs_pages_load_every_asset_from_the_app(client: httpx.AsyncClient, page: str) -> None:
    response = await client.get(page)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    urls = _asset_urls(response.text)
    assert urls, "the page names no script or stylesheet"
    assert not re.search(r"https?://", response.text), "the page names an outside address"
    for url in urls:
        assert url.startswith(DOCS_ASSETS + "/"), url
        asset = await client.get(url)
        assert asset.status_code == 200, url
        assert len(asset.content) > 1000, url


@pytest.fixture
async def live_server(app: FastAPI) -> AsyncIterator[str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False))
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn exposes a flag, not an event
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def _rendered(url: str) -> str:
    assert CHROMIUM is not None
    process = await asyncio.create_subprocess_exec(
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        # Everything but loopback goes to a proxy that is not there: no outside network at all.
        "--proxy-server=http://127.0.0.1:9",
        "--virtual-time-budget=60000",
        "--dump-dom",
        url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    stdout, _ = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode == 0
    return stdout.decode()


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on this machine (`make docs-check` installs it)")
async def test_docs_pages_render_every_operation_in_a_browser_without_network(live_server: str, app: FastAPI) -> None:
    operations = [
        (operation.get("tags", ["default"])[0], operation["operationId"])
        for path_item in app.openapi()["paths"].values()
        for operation in path_item.values()
    ]
    assert len(operations) > 60
    # Swagger UI gives each operation it drew the id `operations-<tag>-<operationId>`, ReDoc a section
    # `operation/<operationId>`: both exist only once the page fetched and parsed the document. Swagger
    # UI writes a tag's spaces as underscores.
    swagger = set(re.findall(r'id="operations-([^"]+)"', await _rendered(live_server + "/docs")))
    assert [op for op in operations if f"{op[0].replace(' ', '_')}-{op[1]}" not in swagger] == []
    redoc = set(re.findall(r'data-section-id="operation/([^"]+)"', await _rendered(live_server + "/redoc")))
    assert [op for op in operations if op[1] not in redoc] == []
