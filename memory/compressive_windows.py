"""Who sees what in a call of the compressive core, in blocks of queries (``memory.blockwise``).

Time is call-relative: the R stored raw states are times -R..-1, the T segment steps 0..T-1,
together the *stream*. Query t sees the raw states of its episode at lags 0..n_mem and the
compressed memory as of its own step; everything here is built from per-key and per-query
facts (validity, episode start, time) gathered onto each block's window, so it is linear in T.

- ``block_plan`` (``conv``, ``max``, ``mean``): keys are [old compressed slots (n_cmem) |
  candidate blocks (T) | stream (R + T)]; the candidate ending at stream index c - 1 + k
  becomes a compressed slot when it is formed (c states of one episode, aligned on episode
  time). Query t can see candidates k in [t - c * n_cmem, t - 1] and stream indices
  [R - n_mem + t, R + t].
- ``UsagePlan`` (``most_used``): keys are the stream only (R = n_mem + c * n_cmem); query t sees
  lags 0..n_mem and, as compressed memory, the n_cmem most used of the c * n_cmem states evicted
  before it (lags n_mem + 1 .. n_mem + c * n_cmem), ranked by the attention they received.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from mnemo.memory.attention import GatherRel
from mnemo.memory.blockwise import Windows, blocked, finish_mask, n_blocks, window_index
from mnemo.memory.trxl import last_start


def masked_windows(
    t: int,
    q: int,
    index: Tensor | None,
    runs: list[tuple[Tensor, Tensor]],
    n_dist: int,
    shifted: tuple[int, int] | None = None,
) -> Windows:
    """Windows whose ``rel`` gathers the position scores at the distances per (query, key) and
    masks in the same pass: a hidden key reads distance index ``n_dist``, the position scores'
    masked column (-inf). ``runs``: for each run of keys, in window order, whether each query
    sees each key (B, n, Q, W_k, from ``finish_mask(..., flat=False)``) and the distances
    (broadcastable to it), joined once at the end. ``shifted``: see ``GatherRel``."""
    dists = [torch.where(seen, dist.clamp(0, n_dist - 1), n_dist) for seen, dist in runs]
    masks = [seen for seen, _ in runs]
    idx, mask = (z[0] if len(z) == 1 else torch.cat(z, 3) for z in (dists, masks))
    idx = idx.flatten(0, 1).long()[:, None]
    return Windows(t, q, index, mask.flatten(0, 1), GatherRel(idx, shifted), rel_masks=True)


@dataclass(frozen=True)
class Stream:
    """Per-key and per-query facts of the stream (R stored raw states, then T steps)."""

    tau: Tensor  # (B, R + T) episode time of each stream state (< 0: before the episode)
    start: Tensor  # (B, R + T) call time at which its episode started
    time: Tensor  # (R + T,) call time
    q_start: Tensor  # (B, T) episode start of each query
    ep_t: Tensor  # (B,) episode time of the last step

    @property
    def valid(self) -> Tensor:
        return self.tau >= 0


def stream_of(ep_t: Tensor, episode_start: Tensor, r: int) -> Stream:
    """The stream facts, from the episode time before the call and the episode starts in it."""
    b, t = episode_start.shape
    steps = torch.arange(t, device=episode_start.device)
    ls = last_start(episode_start)  # (B, T)
    pre = -(ep_t + 1)[:, None]  # (B, 1) start time of the episode running into the call
    q_start = torch.where(ls >= 0, ls, pre)
    seg_tau = torch.where(ls >= 0, steps - ls, ep_t[:, None] + 1 + steps)
    time = torch.arange(-r, t, device=episode_start.device)
    tau = torch.cat([ep_t[:, None] + 1 + time[:r], seg_tau], dim=1)
    start = torch.cat([pre.expand(b, r), q_start], dim=1)
    return Stream(tau, start, time, q_start, seg_tau[:, -1])


def block_plan(
    state: dict[str, Tensor],
    episode_start: Tensor,
    nm: int,
    ncm: int,
    c: int,
    size: int,
) -> dict[str, Tensor | Windows]:
    """Windows, formed candidates and the next compressed memory (``conv``/``max``/``mean``).

    Potential blocks end at times e = -n_mem .. T-1-n_mem (evicted during this call); the one
    ending at e is formed when its episode time is c-1 mod c and its episode is still current
    when it is evicted (after step e + n_mem). ``size`` >= T gives one block over all keys.

    The plan of a row depends only on its episode timing (``ep_t``, ``cvalid`` and the episode
    starts), so when every row has the same (streams of one long text, read in step), it is
    made for one row and shared: on the LM step (8 rows) the plan and its distance index took
    2.9 ms, now 0.7 (one thread), and attention reads one row's distance index
    (``GatherIndex``), not 8 copies of it (the step: 2.8% faster in an A/B). Only calls of
    more than one block ask (the host is asked then anyway, ``slot_windows``): acting steps
    stay free of host syncs.
    """
    b, t = episode_start.shape
    if b > 1 and t > size and rows_alike(state, episode_start):
        first = {k: state[k][:1] for k in ("ep_t", "cvalid")}
        return repeated(block_plan(first, episode_start[:1], nm, ncm, c, size), b)
    r, dev = nm + c - 1, episode_start.device
    s = stream_of(state["ep_t"], episode_start, r)
    ep_t, valid = state["ep_t"], s.valid
    # Potential blocks: stream index p = c - 1 + k ends at time e = p - R; evicted after p + nm.
    p = torch.arange(c - 1, c - 1 + t, device=dev)
    tau_e = s.tau[:, p]
    formed = valid[:, p] & (tau_e >= c - 1) & (tau_e % c == c - 1)
    formed &= s.start[:, p] == s.start[:, p + nm]
    # Old compressed slots: the newest ended at the last block-ending time before the call.
    newest = torch.div(ep_t - nm + 1, c, rounding_mode="floor") * c - 1 - ep_t - 1  # (B,)
    old_e = newest[:, None] - c * torch.arange(ncm - 1, -1, -1, device=dev)  # (B, ncm)
    blk_e = torch.cat([old_e, (p - r).expand(b, t)], dim=1)  # (B, ncm + T)
    blk_valid = torch.cat([state["cvalid"], formed], dim=1)
    blk_start = torch.cat([s.start[:, :1].expand(b, ncm), s.start[:, p]], dim=1)

    q, n = n_blocks(t, size)
    if q >= t:  # one block over every key
        slot_idx, slot_in = (z[None].to(dev) for z in window_index(1, q, 0, ncm + t, ncm + t))
        raw_idx, raw_in = window_index(1, q, 0, r + t, r + t)
    else:
        # Block b's queries see the slots that ended in [b q - nm - c ncm, b q + q - 2 - nm].
        slot_idx, slot_in = slot_windows(blk_valid, blk_e, n, q, -nm - c * ncm, q - 2 - nm)
        raw_idx, raw_in = window_index(n, q, r - nm, nm + q, r + t)
    slot_idx, slot_in = slot_idx.expand(b, n, -1), slot_in.expand(b, n, -1)
    raw_idx, raw_in = raw_idx.to(dev).expand(b, n, -1), raw_in.to(dev).expand(b, n, -1)
    # Times in int32 and the lags once for every row: these arrays are (B, n, Q, W).
    steps = blocked(torch.arange(t, device=dev, dtype=torch.int32)[None], q)  # (1, n, Q, 1)
    same = blocked(s.q_start, q)
    dt = steps - nm - 1 - at_keys(blk_e, slot_idx).int()
    slot_vis = at_keys(blk_valid, slot_idx) & (at_keys(blk_start, slot_idx) == same)
    slot_vis &= (dt >= 0) & (dt < c * ncm)
    lag = steps - s.time[raw_idx[:1]][:, :, None].int()  # (1, n, Q, W): the same in every row
    raw_vis = at_keys(valid, raw_idx) & (at_keys(s.start, raw_idx) == same)
    raw_vis &= (lag >= 0) & (lag <= nm)
    slot_dist = torch.div(dt, c, rounding_mode="floor").add_(nm + 1)
    win = masked_windows(
        t,
        q,
        None if q >= t else torch.cat([slot_idx, ncm + t + raw_idx], dim=2),
        [
            (finish_mask(slot_vis, slot_in, t, flat=False), slot_dist),
            (finish_mask(raw_vis, raw_in, t, flat=False), lag),
        ],
        nm + ncm + 1,
        (slot_idx.shape[-1], nm if q < t else r),  # raw keys: lag = offset + query - key
    )
    # Next compressed memory: the last ncm formed among [old slots | new blocks].
    cand_ok = torch.cat([torch.ones_like(state["cvalid"]), formed], dim=1)
    order = torch.where(cand_ok, torch.arange(ncm + t, device=dev), -1)
    keep = order.topk(ncm, dim=1).values.sort(dim=1).values  # (B, ncm)
    still = blk_valid & (blk_start == s.q_start[:, -1:])
    return {
        "win": win,
        "formed": formed,
        "keep": keep,
        "cvalid": still.gather(1, keep),
        "ep_t": s.ep_t,
    }


def rows_alike(state: dict[str, Tensor], episode_start: Tensor) -> bool:
    """Whether every row has row 0's episode timing (one host sync)."""
    ep_t, cvalid = state["ep_t"], state["cvalid"]
    alike = (ep_t == ep_t[0]).all() & (cvalid == cvalid[:1]).all()
    return bool(alike & (episode_start == episode_start[:1]).all())


def repeated(plan: dict[str, Tensor | Windows], b: int) -> dict[str, Tensor | Windows]:
    """A plan of one row for ``b`` rows. The distance index is kept for the one row (its n
    blocks; ``GatherRel`` and ``GatherIndex`` repeat it), the rest repeated."""
    win = plan["win"]
    assert isinstance(win, Windows)
    index = None if win.index is None else win.index.expand(b, -1, -1)
    rows = Windows(win.t, win.size, index, win.mask.repeat(b, 1, 1), win.rel, win.rel_masks)
    rest = {k: v.repeat(b, *(1,) * (v.dim() - 1)) for k, v in plan.items() if k != "win"}
    return {**rest, "win": rows}  # type: ignore[union-attr]


def at_keys(per_key: Tensor, idx: Tensor) -> Tensor:
    """Per-key facts (B, L) on windows (B, n, W) -> (B, n, 1, W), to broadcast over queries."""
    b, n, w = idx.shape
    return per_key.gather(1, idx.flatten(1)).view(b, n, 1, w)


def slot_windows(
    present: Tensor, key_time: Tensor, n: int, q: int, first: int, last: int
) -> tuple[Tensor, Tensor]:
    """Compressed-slot keys per row and block: the ``present`` keys (B, K) whose ``key_time``
    (B, K, ascending) lies in [b q + first, b q + last] for block b of ``q`` queries.

    Only the valid old slots and the formed candidates (1 in c) can be seen, and each query sees
    at most n_cmem of them: reading every candidate and old slot made the windows of a
    compressive LM step (T 256, blocks of 64) 576 keys wide instead of ~340. Rows differ in
    which keys are present, so the windows are per row, as wide as the fullest (the host is
    asked for that width).

    Returns key indices (B, n, W) and where they are real (False: a clamped repeat, masked).
    """
    b, k = present.shape
    dev = present.device
    counts = present.long().cumsum(1)
    before = torch.cat([counts.new_zeros(b, 1), counts], dim=1)  # (B, K + 1): present before
    start = (q * torch.arange(n, device=dev)).expand(b, n)
    lo = torch.searchsorted(key_time, (start + first).contiguous(), side="left")
    hi = torch.searchsorted(key_time, (start + last).contiguous(), side="right")
    rank_lo, rank_hi = before.gather(1, lo), before.gather(1, hi)  # (B, n)
    width = max(int((rank_hi - rank_lo).max()), 1)
    rank = rank_lo[..., None] + torch.arange(width, device=dev)  # (B, n, W)
    positions = torch.where(present, torch.arange(k, device=dev), k - 1).sort(dim=1).values
    idx = positions.gather(1, rank.clamp(max=k - 1).flatten(1)).view(b, n, width)
    return idx, rank < rank_hi[..., None]


class UsagePlan:
    """Windows of ``most_used``: raw-memory attention first (usage), then the compressed memory.

    Usage of a state is the attention it receives, averaged over heads and summed over the
    queries of its episode that see it as raw memory (lags 0..n_mem), from a first pass over the
    raw memory only. It is final when the state is evicted, so the ranking of query t's
    candidates (all evicted before t) never depends on queries at or after t, and every query's
    compressed memory is computed in parallel.
    """

    def __init__(
        self, state: dict[str, Tensor], episode_start: Tensor, nm: int, ncm: int, c: int, size: int
    ) -> None:
        b, t = episode_start.shape
        self.nm, self.ncm, self.span = nm, ncm, c * ncm
        self.r = r = nm + c * ncm
        dev = episode_start.device
        self.stream = stream_of(state["ep_t"], episode_start, r)
        q, n = n_blocks(t, size)
        self.t, self.q = t, q
        self.real = (torch.arange(n * q, device=dev) < t).view(1, n, q, 1)
        # Usage pass: each block against the raw memory of its queries only.
        idx, inside = window_index(n, q, r - nm, nm + q, r + t)
        lag, same = self.facts(idx, b)
        raw = same & (lag >= 0) & (lag <= nm)
        seen = finish_mask(raw, inside, t, flat=False)
        self.usage_win = masked_windows(t, q, idx, [(seen, lag)], nm + ncm + 1)
        # Main pass: raw memory and the span of evicted states.
        self.idx, self.inside = window_index(n, q, 0, r + q, r + t)
        self.lag, same = self.facts(self.idx, b)
        self.raw = same & (self.lag >= 0) & (self.lag <= nm)  # (B, n, Q, W)
        self.evicted = same & (self.lag > nm) & (self.lag <= r)

    def facts(self, idx: Tensor, b: int) -> tuple[Tensor, Tensor]:
        """Lag of each key of the windows ``idx`` (n, W) from each query, and whether the key is
        a valid state of the query's episode: (B, n, Q, W) each."""
        s, dev = self.stream, self.stream.time.device
        ki = idx.to(dev)[:, None]  # (n, 1, W)
        lag = blocked(torch.arange(self.t, device=dev).expand(b, self.t), self.q) - s.time[ki]
        same = s.valid[:, ki] & (s.start[:, ki] == blocked(s.q_start, self.q))
        return lag, same

    def usage(self, weights: Tensor, before: Tensor) -> Tensor:
        """Usage (B, R + T) of every stream state: ``before`` (B, R) carried from earlier calls
        plus the raw-memory attention ``weights`` (B * n, H, Q, W) of this call's queries."""
        w = weights.mean(1).view(*self.raw.shape[:3], -1) * self.real  # padded: nothing
        got = self.usage_win.sum_into_keys(w.sum(2).flatten(0, 1), self.r + self.t)
        return torch.cat([before, got.new_zeros(got.shape[0], self.t)], dim=1) + got

    def main_windows(self, usage: Tensor) -> Windows:
        """Raw memory plus, per query, the ``n_cmem`` most used evicted states of its span,
        at distances n_mem + 1 + k (k: newest first among them)."""
        u = usage[:, self.idx.to(usage.device)][:, :, None]  # (B, n, 1, W)
        score = torch.where(self.evicted, u, float("-inf"))
        top = score.topk(min(self.ncm, score.shape[-1]), dim=-1).indices
        kept = torch.zeros_like(self.evicted).scatter(-1, top, True) & self.evicted
        newer = kept.flip(-1).cumsum(-1).flip(-1) - kept.long()
        dist = torch.where(kept, self.nm + 1 + newer, self.lag)
        seen = finish_mask(self.raw | kept, self.inside, self.t, flat=False)
        index = None if self.q >= self.t else self.idx
        return masked_windows(self.t, self.q, index, [(seen, dist)], self.nm + self.ncm + 1)

    def next_compressed(self, usage: Tensor) -> tuple[Tensor, Tensor]:
        """Stream indices (B, n_cmem) of the compressed memory the next step will read, oldest
        first after the invalid slots, and whether each is valid (an evicted state of the
        episode still running): the same validity in every layer."""
        s, t = self.stream, self.t
        cand = slice(t, t + self.span)  # evicted before step T: lags n_mem + 1 .. R from T
        ok = s.valid[:, cand] & (s.start[:, cand] == s.q_start[:, -1:])
        top = torch.where(ok, usage[:, cand], float("-inf")).topk(self.ncm, dim=1).indices
        order = torch.where(ok.gather(1, top), top, -1).sort(dim=1).values
        return t + order.clamp(min=0), order >= 0
