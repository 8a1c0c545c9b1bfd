"""A real OpenAI-compatible server: llama.cpp's (llama-cpp-python[server]) serving the bundled SmolLM2 GGUF on
127.0.0.1, reached through the official openai SDK. Run by ``make test-server`` (it builds llama-cpp-python
from source the first time); ``make test`` deselects these.

Pinned: elicitation and a rerun that sends nothing; introspection with structured output and with label
log-probs; and parity: for most prompts the greedy opening that llama.cpp gives agrees with affectlens's local
model on the same GGUF.
"""

from __future__ import annotations

import math
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

pytestmark = [pytest.mark.server, pytest.mark.slow]
llama_cpp = pytest.importorskip(
    "llama_cpp", reason="llama-cpp-python[server] is installed by make test-server"
)

FACES = ["(^_^)", "(T_T)", "(¬_¬)"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    from affectlens.runtime.loading import bundled_gguf

    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(bundled_gguf("smollm2-135m")), "--host",
         "127.0.0.1", "--port", str(port), "--n_ctx", "4096", "--n_threads", "2", "--model_alias", "smollm2"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            if process.poll() is not None:
                pytest.fail("llama_cpp.server exited at start")
            time.sleep(0.5)
    yield url
    process.terminate()
    process.wait(timeout=30)


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("AFFECTLENS_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


def test_elicitation_through_the_server_and_a_rerun_that_sends_nothing(server, tmp_path):
    import affectlens
    from affectlens.config import ApiConfig, ElicitConfig
    from affectlens.stimuli import load_prompts
    from affectlens.store.runs import GENERATION_COLUMNS, read_elicit

    prompts = load_prompts().balanced(1)
    config = ElicitConfig(samples=2, primed=True, max_new_tokens=16, top_p=0.8)
    api = ApiConfig(base_url=server, concurrency=2)
    first = affectlens.elicit("openai:smollm2", tmp_path / "a", prompts=prompts, config=config, api=api)
    run = read_elicit(tmp_path / "a")
    assert list(run.generations.columns) == GENERATION_COLUMNS and len(run.generations) == 18
    assert run.h_first is None and first["requests"]["sent"] == 18 and first["requests"]["input_tokens"] > 0
    assert run.generations["face"].notna().mean() > 0.3  # primed SmolLM2 opens most replies with a bracket
    again = affectlens.elicit("openai:smollm2", tmp_path / "b", prompts=prompts, config=config, api=api)
    assert again["requests"]["sent"] == 0 and again["requests"]["from_cache"] == 18
    assert read_elicit(tmp_path / "b").generations.equals(run.generations)


def test_introspection_with_structured_output_and_with_label_logprobs(server, tmp_path):
    import affectlens
    from affectlens.cells import default_cells
    from affectlens.config import ApiConfig, IntrospectConfig
    from affectlens.store.runs import read_face_cells, read_judged_table

    codes = default_cells().codes
    api = ApiConfig(base_url=server, structured_output="json_object")
    summary = affectlens.introspect("openai:smollm2", tmp_path / "s", faces=FACES, api=api,
                                    config=IntrospectConfig(samples=1))  # fmt: skip
    cells = read_face_cells(tmp_path / "s")
    answers = read_judged_table(tmp_path / "s", "answers")
    # A 135M judge sometimes writes numbers no float holds: such an answer is a recorded failure, not a row.
    assert len(answers) == 3 and answers.loc[~answers["ok"], "reason"].str.startswith("malformed").all()
    assert summary["n_failed_answers"] == int((~answers["ok"]).sum()) < 3
    assert list(cells.index) == [f for f in FACES if f not in summary["faces_without_answer"]]
    np.testing.assert_allclose(cells[codes].sum(axis=1), 1.0, atol=1e-9)
    assert answers.loc[answers["ok"], "raw_sum"].gt(0).all()
    summary = affectlens.introspect("openai:smollm2", tmp_path / "l", faces=FACES, api=ApiConfig(base_url=server),
                                    config=IntrospectConfig(method="logprobs", samples=1))  # fmt: skip
    cells = read_face_cells(tmp_path / "l")
    np.testing.assert_allclose(cells[codes].sum(axis=1), 1.0, atol=1e-9)
    assert 0 < summary["raw_sum"]["median"] <= 1.0 + 1e-9  # the digits' share of the first token's mass


def greedy_local(handle, renderer, text: str, n: int) -> str:
    ids = torch.tensor([renderer.encode(text)])
    with torch.inference_mode():
        for _ in range(n):
            logits = handle.model(input_ids=ids).logits[0, -1]
            ids = torch.cat([ids, logits.argmax().view(1, 1)], dim=1)
    return handle.tokenizer.decode(ids[0, -n:], skip_special_tokens=True)


def test_greedy_openings_agree_with_the_local_model_on_the_same_gguf(server, smollm2):
    from affectlens.config import DEFAULT_INSTRUCTION
    from affectlens.runtime.providers import ApiRequest, open_provider
    from affectlens.runtime.render import Renderer
    from affectlens.stimuli import load_prompts

    provider = open_provider("openai:smollm2", base_url=server)
    renderer = Renderer(smollm2.tokenizer, DEFAULT_INSTRUCTION, primed=False)
    prompts = list(load_prompts().balanced(2))
    same_text = same_first_char = 0
    for prompt in prompts:
        local = greedy_local(smollm2, renderer, prompt.text, 3)
        served = provider.send(
            ApiRequest(DEFAULT_INSTRUCTION, (("user", prompt.text),), 3, temperature=0.0)
        ).text
        same_text += local == served
        same_first_char += local[:1] == served[:1]
    n = len(prompts)
    print(
        f"greedy parity over {n} prompts: first character {same_first_char}/{n}, 3-token text {same_text}/{n}"
    )
    assert same_first_char >= math.ceil(0.7 * n), (same_first_char, n)
