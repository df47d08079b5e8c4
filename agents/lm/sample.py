"""Generation one byte at a time (T=1) with the memory carried, temperature and top-k."""

from __future__ import annotations

import torch

from mnemo.agents.lm.evaluate import autocast
from mnemo.agents.lm.model import ByteLM


@torch.no_grad()
def generate(
    model: ByteLM,
    prompt: bytes,
    n_bytes: int,
    temperature: float = 1.0,
    top_k: int = 0,
    device: torch.device | str = "cpu",
    seed: int | None = None,
    amp: bool = True,
) -> bytes:
    """Continue ``prompt`` by ``n_bytes`` bytes.

    The prompt is read in one call (the contract makes that equal to reading it byte by byte);
    then each new byte is fed back with T=1. An empty prompt starts from a newline.

    Args:
        temperature: softmax temperature; 0 picks the most likely byte.
        top_k: sample among the k most likely bytes only (0 = all 256).
    """
    device = torch.device(device)
    gen = torch.Generator(device="cpu")
    if seed is not None:
        gen.manual_seed(seed)
    was_training = model.training
    model.eval()
    context = prompt or b"\n"
    x = torch.tensor(list(context), dtype=torch.long, device=device).view(1, -1)  # (1, P)
    starts = torch.zeros_like(x, dtype=torch.bool)
    starts[0, 0] = True  # a sample is a document of its own
    state = model.initial_state(1, device)
    out_bytes = bytearray()
    step_start = torch.zeros(1, 1, dtype=torch.bool, device=device)
    for _ in range(n_bytes):
        with autocast(device, amp):
            out = model(x, state, starts)
        state = out.state
        logits = out.logits[0, -1].float().cpu()  # (256,)
        if temperature <= 0:
            nxt = int(logits.argmax())
        else:
            logits = logits / temperature
            if 0 < top_k < logits.numel():
                kth = torch.topk(logits, top_k).values[-1]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            nxt = int(torch.multinomial(torch.softmax(logits, -1), 1, generator=gen))
        out_bytes.append(nxt)
        x = torch.tensor([[nxt]], dtype=torch.long, device=device)  # (1, 1)
        starts = step_start
    model.train(was_training)
    return bytes(out_bytes)


def printable(data: bytes) -> str:
    """Bytes as text for a terminal or TensorBoard (invalid UTF-8 replaced)."""
    return data.decode("utf-8", errors="replace")
