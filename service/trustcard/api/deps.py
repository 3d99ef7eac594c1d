"""FastAPI dependencies as Annotated aliases, so route signatures read like prose."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from trustcard.api.resources import ApiResources


async def get_resources(request: Request) -> ApiResources:
    # async: FastAPI would run a plain `def` dependency on a worker thread for every request.
    resources: ApiResources = request.app.state.resources
    return resources


ResourcesDep = Annotated[ApiResources, Depends(get_resources)]
