"""The byte LM on every registered core: training step, evaluation invariances, sampling.

Nothing here names a core: a core is tested by registering it.
"""

from __future__ import annotations

import pytest
import torch

from mnemo import memory
from mnemo.agents.lm.data import document_streams, from_documents
from mnemo.agents.lm.evaluate import evaluate
from mnemo.agents.lm.model import ByteLM
from mnemo.agents.lm.sample import generate

D = 16


def small_options(name: str) -> dict:
    opts = memory.core_options(name)
    wanted = {"n_layers": 1, "n_heads": 2, "mem_len": 8, "chunk_size": 4, "window": 6}
    wanted |= {"n_mem": 4, "n_cmem": 4, "compression_rate": 2}
    return {k: v for k, v in wanted.items() if k in opts}


@pytest.fixture(params=memory.core_names())
def model(request: pytest.FixtureRequest) -> ByteLM:
    torch.manual_seed(0)
    return ByteLM(request.param, D, small_options(request.param)).eval()


def corpus():
    docs = [bytes([97 + (i * 7 + j * 3) % 26 for j in range(9 + 6 * i)]) for i in range(4)]
    return from_documents(docs, "t")


def test_forward_shapes_and_a_training_step(model: ByteLM) -> None:
    model.train()
    x = torch.randint(0, 256, (3, 11))
    starts = torch.zeros(3, 11, dtype=torch.bool)
    starts[:, 0] = True
    out = model(x, model.initial_state(3, "cpu"), starts)
    assert out.logits.shape == (3, 11, 256) and out.aux_loss.dim() == 0
    loss = torch.nn.functional.cross_entropy(out.logits.flatten(0, 1), x.flatten())
    (loss + out.aux_loss).backward()
    assert model.embed.weight.grad is not None and torch.isfinite(model.embed.weight.grad).all()


def test_eval_does_not_depend_on_packing_or_segment_length(model: ByteLM) -> None:
    # Memory is carried over each whole document and reset between them, so bits per byte
    # must not change with how documents are packed into streams or cut into segments.
    c = corpus()
    ref = evaluate(model, document_streams(c, 1), 64)
    for n_streams, seg in [(3, 5), (2, 1)]:
        res = evaluate(model, document_streams(c, n_streams), seg)
        assert res.bytes == ref.bytes == len(c) - c.n_docs
        assert res.bits_per_byte == pytest.approx(ref.bits_per_byte, abs=1e-4)


def test_greedy_sampling_matches_one_long_call(model: ByteLM) -> None:
    prompt = b"abcab"
    out = generate(model, prompt, 12, temperature=0.0)
    seq = torch.tensor(list(prompt + out)).view(1, -1)
    starts = torch.zeros_like(seq, dtype=torch.bool)
    starts[0, 0] = True
    with torch.no_grad():
        logits = model(seq, model.initial_state(1, "cpu"), starts).logits
    want = logits[0, len(prompt) - 1 : -1].argmax(-1)
    assert bytes(want.tolist()) == out


def test_sampling_with_top_k_stays_in_the_top_k(model: ByteLM) -> None:
    out = generate(model, b"x", 20, temperature=1.0, top_k=1, seed=0)
    assert out == generate(model, b"x", 20, temperature=0.0)
