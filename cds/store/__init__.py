"""cds.store: feedback and audit tables (SQLAlchemy 2; SQLite by default, PostgreSQL by URL)."""

from cds.store.db import AuditRecord, FeedbackItem, IssuedCard, Store, StoreUnavailable

__all__ = ["AuditRecord", "FeedbackItem", "IssuedCard", "Store", "StoreUnavailable"]
