"""rankline.retrieval: corpora, encoders, FAISS and Lucene indexes, fusion."""
from rankline.retrieval.base import Retriever
from rankline.retrieval.build import BuildOptions, build_index
from rankline.retrieval.retrievers import open_index, open_retriever

__all__ = ["BuildOptions", "Retriever", "build_index", "open_index", "open_retriever"]
