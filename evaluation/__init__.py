"""rankline.evaluation: TREC/BEIR file formats, trec_eval-exact metrics, LLM relevance labels and
confidence intervals. Imports nothing else of rankline."""
