"""Pydantic models of the internal API: the bodies it serialises and parses, and the source of
its OpenAPI schema."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServiceKeyInfo(_Model):
    """The service key a request authenticated with (never the key itself)."""

    id: str
    name: str
    scopes: list[str]
