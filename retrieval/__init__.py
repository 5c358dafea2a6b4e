"""rankline.retrieval: corpora, encoders, FAISS and Lucene indexes, sharded dense search, fusion."""
from rankline.retrieval.base import Retriever
from rankline.retrieval.build import BuildOptions, build_index
from rankline.retrieval.retrievers import open_index, open_retriever
from rankline.retrieval.sharding import ShardedDenseRetriever, open_sharded_retriever

__all__ = ["BuildOptions", "Retriever", "ShardedDenseRetriever", "build_index", "open_index", "open_retriever",
           "open_sharded_retriever"]
