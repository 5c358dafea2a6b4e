"""rankline.retrieval: corpora, encoders, FAISS and Lucene indexes, fusion, and the record types
shared by every stage."""
from rankline.retrieval.base import Retriever
from rankline.retrieval.types import Doc, Hit, Query

__all__ = ["Doc", "Hit", "Query", "Retriever"]
