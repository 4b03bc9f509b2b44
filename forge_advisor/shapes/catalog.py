"""The embedded model catalog: published ``config.json`` fields of widely used models,
so that ``--model meta-llama/Llama-3.1-8B`` works offline."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from forge_advisor.catalog import load_catalog

__all__ = ["CatalogModel", "catalog_models", "find_catalog_model", "search_catalog"]


@dataclass(frozen=True)
class CatalogModel:
    id: str
    family: str
    published_parameters: str
    source: str
    config: dict[str, Any]
    aliases: tuple[str, ...] = ()


@lru_cache(maxsize=1)
def catalog_models() -> tuple[CatalogModel, ...]:
    data = load_catalog("models")
    return tuple(
        CatalogModel(
            id=m["id"],
            family=m["family"],
            published_parameters=m["published_parameters"],
            source=m["source"],
            config=m["config"],
            aliases=tuple(m.get("aliases", ())),
        )
        for m in data["models"]
    )


def _keys(m: CatalogModel) -> list[str]:
    return [m.id.lower(), m.id.split("/")[-1].lower(), *(a.lower() for a in m.aliases)]


def find_catalog_model(name: str) -> CatalogModel | None:
    """Exact id, the id without its organisation, or an alias; case-insensitive."""
    key = name.strip().lower()
    for m in catalog_models():
        if key in _keys(m):
            return m
    return None


def search_catalog(text: str | None) -> list[CatalogModel]:
    if not text:
        return list(catalog_models())
    words = text.lower().split()
    hay = lambda m: " ".join([*_keys(m), m.family.lower(), m.config.get("model_type", "")])  # noqa: E731
    return [m for m in catalog_models() if all(w in hay(m) for w in words)]
