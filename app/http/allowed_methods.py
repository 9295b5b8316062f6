"""The methods each path takes, read from the published OpenAPI document: the `Allow` header of a
405, and the 405 for a path a route spells out (`/customers/search`) that a `/customers/{id}` route
would otherwise take for a malformed id."""

import re
from collections.abc import Callable
from typing import Any

_PARAMETER = re.compile(r"\{[^}/]+\}")


class AllowedMethods:
    def __init__(self, document: Callable[[], dict[str, Any]]) -> None:
        # Read at the first use: generating the document at start-up would slow every start.
        self._document = document
        self._literal: dict[str, frozenset[str]] | None = None
        self._templates: list[tuple[re.Pattern[str], frozenset[str]]] = []

    def of(self, path: str) -> frozenset[str]:
        """The methods of `path`; a path spelled out in the document shadows the templates."""
        literal = self._load()
        if path in literal:
            return literal[path]
        methods: set[str] = set()
        for pattern, template_methods in self._templates:
            if pattern.fullmatch(path):
                methods |= template_methods
        return frozenset(methods)

    def spelled_out(self, path: str) -> frozenset[str] | None:
        """The methods of a path written without parameters in the document, else None."""
        return self._load().get(path)

    def _load(self) -> dict[str, frozenset[str]]:
        if self._literal is None:
            literal: dict[str, frozenset[str]] = {}
            for path, operations in self._document()["paths"].items():
                methods = frozenset(method.upper() for method in operations)
                if _PARAMETER.search(path):
                    regex = "".join(
                        "[^/]+" if part.startswith("{") else re.escape(part) for part in re.split(r"(\{[^}/]+\})", path)
                    )
                    self._templates.append((re.compile(regex), methods))
                else:
                    literal[path] = methods
            self._literal = literal
        return self._literal
