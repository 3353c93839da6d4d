"""One renderer per output format over the shared :class:`~bastion.findings.Report`."""

from __future__ import annotations

import importlib

from bastion.atomic import atomic_write_text
from bastion.errors import UsageError
from bastion.findings import Report
from bastion.render.interface import Renderer, RenderOptions, summary_line

FORMATS: dict[str, tuple[str, str]] = {
    "table": ("bastion.render.text", "render_text"),
    "json": ("bastion.render.json", "render_json"),
    "sarif": ("bastion.render.sarif", "render_sarif"),
    "markdown": ("bastion.render.markdown", "render_markdown"),
}

__all__ = [
    "FORMATS",
    "RenderOptions",
    "Renderer",
    "atomic_write_text",
    "get_renderer",
    "render",
    "summary_line",
]


def get_renderer(name: str) -> Renderer:
    """The renderer for format ``name``; imported on demand so one format never pays for the others."""
    try:
        module, attr = FORMATS[name]
    except KeyError:
        raise UsageError(f"unknown format {name!r} (expected one of: {', '.join(FORMATS)})") from None
    renderer: Renderer = getattr(importlib.import_module(module), attr)
    return renderer


def render(report: Report, fmt: str, options: RenderOptions | None = None) -> str:
    """Render ``report`` in format ``fmt``."""
    return get_renderer(fmt)(report, options or RenderOptions())
