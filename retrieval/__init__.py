"""rankline.retrieval: corpora, encoders, FAISS and Lucene indexes, fusion, and the record types
shared by every stage."""
from rankline.retrieval.base import Retriever
from rankline.retrieval.build import BuildOptions, build_index
from rankline.retrieval.retrievers import open_index, open_retriever
from rankline.retrieval.types import Doc, Hit, Query

__all__ = ["BuildOptions", "Doc", "Hit", "Query", "Retriever", "build_index", "open_index", "open_retriever"]
