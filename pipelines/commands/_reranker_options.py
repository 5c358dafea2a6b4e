"""The reranker flags that `rankline rerank`, `batch-rerank` and `search` share, and the model flags
that `label` shares with them: one definition of the flags, their validation and the reranker stage
they describe."""
from __future__ import annotations

import argparse
from typing import Any

# Flags that are reranker options (argparse dest = the option's name); left unset (None), an option
# keeps the reranker's own default.
RERANKER_OPTIONS = ("window", "stride", "batch_size", "parity", "context_size", "layer", "max_block_tokens", "calibrate")
_POSITIVE = ("window", "stride", "depth", "batch_size", "context_size", "max_block_tokens")


def add_reranker_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup, *,
                           default: str | None = "first", device: bool = True) -> None:
    """--reranker (default `default`) and its model flags (add_model_arguments), --depth and the
    reranker options."""
    from rankline.rerankers import DEFAULT_DEPTH, RERANKERS

    parser.add_argument("--reranker", choices=sorted(RERANKERS), default=default,
                        help=f"default: {default}" if default else "rerank with this reranker (default: no reranking)")
    add_model_arguments(parser, device=device)
    parser.add_argument("--depth", type=int, default=DEFAULT_DEPTH,
                        help="how many candidates of each query the reranker receives: the top DEPTH are reranked, "
                             f"the rest keep their order below them (default {DEFAULT_DEPTH})")
    parser.add_argument("--window", type=int,
                        help="first/listwise: passages per sliding window (default 20); beyond 26 they are labelled "
                             "with single-token identifiers of the model's tokenizer, and a window of at least "
                             "--depth ranks each list in one pass (e.g. --window 100 on a linearised model)")
    parser.add_argument("--stride", type=int,
                        help="first/listwise: how far the window moves up, at most --window (default 10, or the "
                             "window when smaller)")
    parser.add_argument("--parity", choices=["rank_llm"], help="FIRST: reproduce rank_llm 0.26.0 exactly")
    parser.add_argument("--batch-size", type=int,
                        help="what one forward pass holds, which depends on the reranker: first/listwise windows, "
                             "query-likelihood (query, passage) pairs, blockrank queries (default: the reranker's own)")
    parser.add_argument("--context-size", type=int, help="first/listwise: prompt token budget (default 4096)")
    parser.add_argument("--layer", type=int, help="BlockRank: decoder layer read for the scores (default: 20/32 of the depth)")
    parser.add_argument("--max-block-tokens", type=int, help="BlockRank: block size cap in tokens (default 384)")
    parser.add_argument("--calibrate", action="store_true", default=None,
                        help="BlockRank: subtract the scores of a content-free query (ICLR 2025 calibration)")


def add_model_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup, *, device: bool = True) -> None:
    """The causal LM a command loads (--model), in what precision (--dtype) and where (--device, unless
    the command already has one): shared by the rerankers' commands and `label`."""
    from rankline.rerankers.models import DEFAULT_MODEL

    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help=f"causal LM: a Hugging Face id or a local folder (default: the embedded {DEFAULT_MODEL})")
    parser.add_argument("--adapter", metavar="DIR",
                        help="a LoRA adapter folder trained on --model (rankline train's OUT/best), merged in at load")
    if device:
        parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"],
                        help="model dtype (default: bfloat16 on a GPU, float32 on the CPU)")


def check_positive(args: argparse.Namespace, flags: tuple[str, ...]) -> None:
    """Each of `flags` (argparse dests) that the user set must be >= 1."""
    for flag in flags:
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise ValueError(f"--{flag.replace('_', '-')} must be >= 1, got {value}")


def reranker_options(args: argparse.Namespace) -> dict[str, Any]:
    """The reranker options the user set, after checking their ranges and that --reranker takes them."""
    from rankline.rerankers import reranker_options as takes

    check_positive(args, _POSITIVE)
    options = {key: getattr(args, key) for key in RERANKER_OPTIONS if getattr(args, key) is not None}
    foreign = [key for key in options if key not in takes(args.reranker)]
    if foreign:
        raise ValueError(f"--{foreign[0].replace('_', '-')} does not apply to --reranker {args.reranker}")
    return options


def reranker_stage(args: argparse.Namespace):
    """The rerank stage the flags describe: `build_reranker` by name (it loads the model where the
    stage runs) and --depth. Every flag is checked here, before any input is read or any model loads:
    the reranker's option values (`check_reranker`: window, stride, context size, parity, layer, ...),
    the model's whereabouts and the device."""
    from rankline.pipelines.executor import Factory, RerankStage
    from rankline.rerankers import build_reranker
    from rankline.rerankers.registry import check_reranker

    kwargs = {"model": args.model, "device": args.device, "dtype": args.dtype, **reranker_options(args)}
    if getattr(args, "adapter", None):
        kwargs["adapter"] = args.adapter
    try:
        check_reranker(args.reranker, **kwargs)
    except ValueError as exc:
        raise ValueError(_as_flags(str(exc))) from None
    return RerankStage(Factory(build_reranker, (args.reranker,), kwargs), args.depth)


def _as_flags(message: str) -> str:
    """A reranker option's message in the command line's words (context_size -> --context-size)."""
    import re

    return re.sub(r"^(\w+) (must|is)", lambda m: f"--{m.group(1).replace('_', '-')} {m.group(2)}", message)
