"""Checked readers: a missing or corrupt file is one line that names it, never a library traceback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from safetensors.torch import load_file

from affectlens.errors import AffectlensError


def read_tensors(path: Path | str) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError

    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise AffectlensError(f"{path}: no such file") from None
    except (OSError, ValueError, RuntimeError, SafetensorError) as exc:
        raise AffectlensError(f"{path}: unreadable safetensors file ({exc})") from None


def read_parquet(path: Path | str) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except FileNotFoundError:
        raise AffectlensError(f"{path}: no such file") from None
    except Exception as exc:  # pyarrow raises several unrelated types for a corrupt file
        raise AffectlensError(f"{path}: unreadable Parquet file ({type(exc).__name__})") from None


def read_json(path: Path | str) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AffectlensError(f"{path}: no such file") from None
    except (ValueError, UnicodeDecodeError):
        raise AffectlensError(f"{path}: not valid JSON") from None
