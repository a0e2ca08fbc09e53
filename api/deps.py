"""Request-scoped dependencies."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends
from sqlmodel import Session

from profiles.db import read_scope, session_scope


def get_session() -> Iterator[Session]:
    """One transaction per request: committed when the route returns, rolled back on any error."""
    with session_scope() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def get_read_session() -> Iterator[Session]:
    """A read-only transaction: on SQLite it takes no write lock, so reads never queue behind a writer."""
    with read_scope() as session:
        yield session


ReadSessionDep = Annotated[Session, Depends(get_read_session)]
