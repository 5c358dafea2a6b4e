"""rankline.evaluation: trec_eval-exact measures, significance tests, LLM relevance labels and
confidence intervals. Imports only rankline.formats and rankline.rerankers (model loading)."""
