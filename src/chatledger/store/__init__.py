"""The persistence layer: conversations, messages, tasks and idempotency keys.

store = SQLAlchemyStore.from_url("sqlite:///./chatledger.db")
await store.migrate()
conversation = await store.create_conversation("alice")
await store.append("alice", conversation.id, [ChatMessage.user("hello")])
"""

from chatledger.storage import IdempotencyRecord, Lease
from chatledger.store.core import UNSET
from chatledger.store.engine import Connector, connect, normalize_url
from chatledger.store.idempotency import IdempotencyStore
from chatledger.store.sqlalchemy import SQLAlchemyStore
from chatledger.store.summaries import SummaryStore
from chatledger.store.tasks import TaskStore

__all__ = [
    "UNSET",
    "Connector",
    "IdempotencyRecord",
    "IdempotencyStore",
    "Lease",
    "SQLAlchemyStore",
    "SummaryStore",
    "TaskStore",
    "connect",
    "normalize_url",
]
