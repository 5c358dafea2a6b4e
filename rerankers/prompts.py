"""Prompts of the LLM rerankers.

The listwise prompt is rank_llm's `rank_zephyr_alpha_template` exactly as rank_llm 0.26.0 builds it for
FIRST (passages labelled [A], [B], ...; see ../shared/fixtures/first-parity/README.md), including
its passage clean-up (ftfy, 300-word cap, "[n]" -> "(n)") and its context fitting (shrink the word cap
until the prompt fits). On top of that, `fit_listwise_prompt` can truncate passages to a token budget
so that a window always fits the model's context, even where word capping cannot get it there.

Identifiers: A..Z, as rank_llm, for windows of up to 26 passages. A larger window (a whole candidate list in one
prompt, e.g. on a linear-attention model) needs more identifiers that FIRST can still read from one next-token
distribution, so each must be one token of the model's tokenizer: `single_token_identifiers` continues A..Z with
the vocabulary's own tokens that are all capitals (2 letters, then 3, ..., each length alphabetically), then the
all-lower-case ones (by length, then alphabetically), keeping each that the tokenizer reads as exactly that one
token right after "[" and after " [" (how the prompt and the answer write it).
The pointwise prompt is UPR's (Sachan et al. 2022): "Passage: ... Please write a question based on
this passage."
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

SYSTEM = "You are RankLLM, an intelligent assistant that can rank passages based on their relevancy to the query"
PREFIX = (
    "I will provide you with {num} passages, each indicated by an alphabetical identifier []. "
    "Rank the passages based on their relevance to the search query: {query}.\n"
)
SUFFIX = (
    "Search Query: {query}.\nRank the {num} passages above based on their relevance to the search query. "
    "All the passages should be included and listed using identifiers, in descending order of relevance. "
    "The output format should be [] > [], e.g., [B] > [A], Answer concisely and directly and only respond "
    "with the ranking results, do not say any word or explain."
)
MAX_PASSAGE_WORDS = 300
MAX_IDENTIFIERS = 26  # A..Z: rank_llm's labels, and the most a window holds without the tokenizer's identifiers
LETTERS = tuple(chr(65 + i) for i in range(MAX_IDENTIFIERS))
_NUMBERED_BRACKET = re.compile(r"\[(\d+)\]")
_CAPITALS, _LOWER = re.compile(r"[A-Z]+"), re.compile(r"[a-z]+")
_CONTEXTS = ("[", " [")  # an identifier follows "[" in the prompt and FIRST's engine input, " [" in an answer


@dataclass(frozen=True)
class Passage:
    """A candidate's text as a reranker prompt sees it."""

    text: str
    title: str = ""


def identifier(i: int) -> str:
    """The label of the i-th (0-based) passage of a window of at most 26: A, B, C, ..., Z."""
    if not 0 <= i < MAX_IDENTIFIERS:
        raise ValueError(f"identifier {i}: A..Z label positions 0..{MAX_IDENTIFIERS - 1}; larger windows take "
                         "single_token_identifiers(tokenizer, n)")
    return LETTERS[i]


def reads_as_one_token(tokenizer: Any, label: str) -> bool:
    """Whether `label` is exactly one token of `tokenizer` where identifiers stand: after "[" and after " ["."""
    for context in _CONTEXTS:
        head = tokenizer.encode(context, add_special_tokens=False)
        ids = tokenizer.encode(f"{context}{label}]", add_special_tokens=False)
        if len(ids) <= len(head) or ids[: len(head)] != head or tokenizer.decode([ids[len(head)]]) != label:
            return False
    return True


def single_token_identifiers(tokenizer: Any, n: int) -> tuple[str, ...]:
    """The labels of a window of n passages (module docstring): A..Z up to 26, unchecked as rank_llm; beyond,
    A..Z and then the vocabulary's capital and lower-case tokens, every one checked by `reads_as_one_token`.
    A ValueError says how many the tokenizer supplies when it cannot supply n."""
    if n <= MAX_IDENTIFIERS:
        return LETTERS[:n]
    broken = [c for c in LETTERS if not reads_as_one_token(tokenizer, c)]
    if broken:
        raise ValueError(f"the tokenizer does not read {', '.join(broken)} as one token after '[': windows of more "
                         f"than {MAX_IDENTIFIERS} passages need single-token identifiers")
    decoded = set(tokenizer.batch_decode([[i] for i in range(len(tokenizer))]))
    more = [sorted((t for t in decoded if pattern.fullmatch(t) and t not in LETTERS), key=lambda t: (len(t), t))
            for pattern in (_CAPITALS, _LOWER)]
    labels = list(LETTERS)
    for label in more[0] + more[1]:
        if len(labels) == n:
            break
        if reads_as_one_token(tokenizer, label):
            labels.append(label)
    if len(labels) < n:
        raise ValueError(f"a window of {n} passages needs {n} single-token identifiers, and this tokenizer supplies "
                         f"only {len(labels)} (A..Z, then its all-capital and all-lower-case tokens): use a window "
                         f"of at most {len(labels)}")
    return tuple(labels)


def _labels(labels: Sequence[str] | None, num: int) -> Sequence[str]:
    labels = LETTERS if labels is None else labels
    if num > len(labels):
        raise ValueError(f"a listwise window holds at most {len(labels)} passages "
                         f"({'A..Z' if labels is LETTERS else 'its identifiers'}), got {num}")
    return labels


def rewrite_numbered_brackets(text: str) -> str:
    """"[12]" -> "(12)" (any Unicode digits), so passage text cannot look like an identifier."""
    return _NUMBERED_BRACKET.sub(r"(\1)", text)


def passage_content(passage: Passage, max_words: int = MAX_PASSAGE_WORDS) -> str:
    """rank_llm's `_convert_doc_to_prompt_content`: title prefix, ftfy, word cap, bracket rewrite."""
    import ftfy

    content = f"Title: {passage.title} Content: {passage.text}" if passage.title else passage.text
    content = ftfy.fix_text(content.strip())
    content = " ".join(content.split()[:max_words])
    return rewrite_numbered_brackets(content)


def listwise_messages(query: str, contents: Sequence[str], labels: Sequence[str] | None = None) -> list[dict[str, str]]:
    """The chat messages of one window whose passages are already formatted, labelled by `labels` (default A..Z)."""
    num = len(contents)
    labels = _labels(labels, num)
    query = rewrite_numbered_brackets(query)
    body = "".join(f"[{label}] {c}\n" for label, c in zip(labels, contents))
    user = PREFIX.format(num=num, query=query) + body + SUFFIX.format(num=num, query=query)
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def render_chat(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    """The rendered chat prompt with the generation prompt, after rank_llm's whole-string ftfy pass."""
    import ftfy

    rendered = tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True, enable_thinking=False
    )
    return ftfy.fix_text(rendered)


def ranking_output_tokens(tokenizer: Any, num: int, labels: Sequence[str] | None = None) -> int:
    """Tokens of the longest answer for `num` passages, "[A] > [B] > ...", as rank_llm budgets it."""
    answer = " > ".join(f"[{label}]" for label in _labels(labels, num)[:num])
    return len(tokenizer.encode(answer, add_special_tokens=False))


def _n_tokens(tokenizer: Any, text: str) -> int:
    return len(tokenizer.encode(text))  # special tokens on, as rank_llm counts (BOS included where added)


def _truncate_tokens(tokenizer: Any, text: str, max_tokens: int) -> str:
    ids = tokenizer.encode(text, add_special_tokens=False)
    return text if len(ids) <= max_tokens else tokenizer.decode(ids[: max(max_tokens, 0)])


def fit_listwise_prompt(
    tokenizer: Any,
    query: str,
    passages: Sequence[Passage],
    *,
    context_size: int = 4096,
    token_budget: bool = True,
    labels: Sequence[str] | None = None,
) -> str:
    """The rendered listwise prompt of one window, fitted into `context_size` tokens with room for the answer.

    First rank_llm's rule: one word cap for all passages, starting at 300 and lowered by
    max(1, excess // (4 * num)) until the prompt fits. If the cap reaches one word and the prompt
    still does not fit (a huge query, giant "words"), `token_budget` truncates every passage to an equal
    share of the tokens left; without it, a ValueError is raised. Passages are labelled by `labels` (default
    A..Z; `single_token_identifiers` for more).
    """
    num = len(passages)
    labels = _labels(labels, num)
    budget = context_size - ranking_output_tokens(tokenizer, num, labels)
    max_words = MAX_PASSAGE_WORDS
    while True:
        contents = [passage_content(p, max_words) for p in passages]
        prompt = render_chat(tokenizer, listwise_messages(query, contents, labels))
        n_tok = _n_tokens(tokenizer, prompt)
        if n_tok <= budget:
            return prompt
        if max_words <= 1:
            break
        max_words = max(1, max_words - max(1, (n_tok - budget) // (num * 4)))
    if not token_budget:
        raise ValueError(f"window of {num} passages does not fit {context_size} tokens even at one word each")
    fixed = _n_tokens(tokenizer, render_chat(tokenizer, listwise_messages(query, [""] * num, labels)))
    per_passage = (budget - fixed) // num
    while per_passage >= 0:
        cut = [_truncate_tokens(tokenizer, c, per_passage) for c in contents]
        prompt = render_chat(tokenizer, listwise_messages(query, cut, labels))
        if _n_tokens(tokenizer, prompt) <= budget:
            return prompt
        per_passage -= max(1, per_passage // 8)
    raise ValueError(
        f"the query alone needs {fixed} tokens: no window of {num} passages fits {context_size} tokens"
    )


def query_likelihood_prompt(tokenizer: Any, passage: Passage, max_words: int = MAX_PASSAGE_WORDS) -> str:
    """UPR's instruction for a passage, rendered as a chat turn when the tokenizer has a chat template;
    the query follows it as the answer to score."""
    instruction = f"Passage: {passage_content(passage, max_words)}\nPlease write a question based on this passage."
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": instruction}], tokenize=False, add_generation_prompt=True
        )
    return instruction + "\nQuestion:"
