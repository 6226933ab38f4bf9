"""Backup stores behind one interface (see base.Store)."""

from __future__ import annotations

import threading

from ..config import Settings
from .base import Listing, PutResult, Store, StoredObject
from .local import LocalStore

__all__ = ["Listing", "LocalStore", "PutResult", "Store", "StoredObject", "open_store"]


def open_store(settings: Settings, cancel: threading.Event | None = None) -> Store:
    """Build the store named by ``[store] type``; ``cancel`` ends an S3 retry loop."""
    if settings.store.type == "s3":
        from .s3 import S3Store  # the only module importing boto3

        assert settings.store.s3 is not None
        store: Store = S3Store(settings.store.s3, cancel=cancel)
        return store
    return LocalStore(settings.store.path)
