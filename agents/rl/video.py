"""Watch the agent: record whole episodes, encode them as animated GIFs, log them to TensorBoard.

Why not ``SummaryWriter.add_video``: it needs moviepy, and with moviepy 2.x installed it prints a
warning and writes nothing. TensorBoard's Images tab plays an animated GIF stored in an image
summary, which is what add_video writes anyway, so we encode the GIF with Pillow and write the
same ``Summary.Image`` ourselves. tests/test_video.py opens the event file and looks for the GIF
bytes, so that the video cannot silently vanish again.

Memory at work: while an episode is played, the core's inputs and the env's ``info["phase"]``
of every step are captured; afterwards the core's optional ``inspect`` hook (memory/base.py) is
run over the whole episode and what it returns (attention weights, the neural memory's
retrieval loss) is drawn with the phases marked (agents/rl/memory_plots.py) and logged under
``memory/``.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from PIL import Image
from torch import Tensor

from mnemo.agents.errors import ConfigError, UserError
from mnemo.agents.rl.actor_critic import ActorCritic
from mnemo.agents.rl.config import RLConfig
from mnemo.agents.rl.vector_env import SUCCESS_KEYS, batch_of_one, counted_success

MAX_FRAMES = 200
"""Frames kept per episode: longer episodes are subsampled evenly so event files stay small."""
MIN_SIDE = 128
"""Small renders (recall is 64 x 96) are scaled up by a whole factor until this size."""


@dataclass
class Episode:
    frames: list[np.ndarray]
    """RGB frames (H, W, 3) uint8, at most ``2 * max_frames``, evenly spaced."""
    frame_stride: int
    """Env steps between kept frames."""
    length: int
    ret: float
    success: bool | None
    inspect: dict[str, Tensor] = field(default_factory=dict)
    """What the core's ``inspect`` hook returned for the whole episode (may be empty)."""
    phases: list[str | None] = field(default_factory=list)
    """``info["phase"]`` of every step: the phase its action was taken in (None if unnamed)."""


def subsample(frames: list[np.ndarray], max_frames: int = MAX_FRAMES) -> list[np.ndarray]:
    """At most ``max_frames`` frames, evenly spaced, always keeping the first and the last."""
    if len(frames) <= max_frames:
        return list(frames)
    idx = np.linspace(0, len(frames) - 1, max_frames).round().astype(int)
    return [frames[i] for i in idx]


def frames_to_gif(
    frames: list[np.ndarray], fps: float = 8.0, max_frames: int = MAX_FRAMES
) -> bytes:
    """Encode RGB frames (H, W, 3) uint8 as a looping animated GIF."""
    if not frames:
        raise ValueError("frames_to_gif needs at least one frame")
    frames = subsample(frames, max_frames)
    h, w = frames[0].shape[:2]
    scale = max(1, -(-MIN_SIDE // min(h, w)))
    images = [Image.fromarray(np.ascontiguousarray(f[..., :3])) for f in frames]
    if scale > 1:
        images = [im.resize((w * scale, h * scale), Image.NEAREST) for im in images]
    buf = io.BytesIO()
    images[0].save(
        buf,
        format="GIF",
        save_all=True,
        append_images=images[1:],
        duration=max(20, round(1000 / fps)),
        loop=0,
    )
    return buf.getvalue()


def gif_size(gif: bytes) -> tuple[int, int]:
    """(height, width) of a GIF."""
    with Image.open(io.BytesIO(gif)) as im:
        return im.height, im.width


def log_gif(writer: Any, tag: str, gif: bytes, step: int) -> None:
    """Write ``gif`` as an image summary that TensorBoard's Images tab plays (see module doc)."""
    from tensorboard.compat.proto.summary_pb2 import Summary

    h, w = gif_size(gif)
    image = Summary.Image(height=h, width=w, colorspace=3, encoded_image_string=gif)
    writer._get_file_writer().add_summary(
        Summary(value=[Summary.Value(tag=tag, image=image)]), step
    )


def make_render_env(cfg: RLConfig) -> gym.Env:
    """One gymnasium env of the run's id and kwargs, rendering rgb_array frames."""
    import mnemo.envs  # noqa: F401  (registers mnemo's envs)

    try:
        env = gym.make(cfg.env.id, render_mode="rgb_array", **cfg.env.kwargs)
    except (TypeError, AssertionError, gym.error.Error) as e:  # no render_mode, or none listed
        what = " ".join(str(e).split())
        raise ConfigError(f"{cfg.env.id} cannot render rgb_array frames ({what})") from e
    space = env.observation_space
    # gymnasium's Dict space answers `"image" in space` with False: look in .spaces.
    if isinstance(space, gym.spaces.Dict) and "image" in space.spaces:
        from minigrid.wrappers import ImgObsWrapper

        return ImgObsWrapper(env)
    return env


def episode_success(info: dict[str, Any], ret: float, success_return: float | None) -> bool | None:
    """Whether a finished episode succeeded, as training counts it: by ``env.success_return``
    when set, else as the env says; None where it says nothing (never guessed from the reward)."""
    said = next((info[k] for k in SUCCESS_KEYS if k in info), None)
    return counted_success(ret, None if said is None else bool(said), success_return)


def check_renders(cfg: RLConfig, key: str) -> None:
    """Refuse, before any training or evaluation, an env whose frames a video cannot show:
    ``render()`` must give an (H, W, 3) uint8 array. ``key`` names the setting asking for them."""
    try:
        env = make_render_env(cfg)
    except ConfigError as e:
        raise ConfigError(f"{key}: {e}") from e
    try:
        env.reset(seed=0)
        frame = env.render()
    except (AssertionError, NotImplementedError, gym.error.Error) as e:  # gymnasium's checker
        what = " ".join(str(e).split()) or type(e).__name__
        raise ConfigError(f"{key}: {cfg.env.id} cannot render rgb_array frames ({what})") from e
    finally:
        env.close()
    shape = getattr(frame, "shape", None)
    if getattr(frame, "dtype", None) != np.uint8 or shape is None or len(shape) != 3:
        got = f"an array of shape {shape}" if shape is not None else type(frame).__name__
        raise ConfigError(
            f"{key}: {cfg.env.id}'s render() gives {got}, not an (H, W, 3) uint8 rgb_array frame"
        )


@torch.no_grad()
def record_episode(
    model: ActorCritic,
    cfg: RLConfig,
    seed: int,
    greedy: bool = True,
    max_frames: int = MAX_FRAMES,
    max_steps: int = 100_000,
    inspect: bool = True,
) -> Episode:
    """Play one whole episode with ``model`` and keep its frames (and the core's inspection)."""
    device = next(model.parameters()).device
    env = make_render_env(cfg)
    inputs: list[Tensor] = []
    first_state: list[Any] = []

    def capture(_module: Any, args: tuple) -> None:
        x, state, _ = args
        inputs.append(x.detach())
        if not first_state:
            first_state.append(state)

    hook = model.core.register_forward_pre_hook(capture) if inspect else None
    was_training = model.training
    model.eval()
    try:
        obs, _ = env.reset(seed=seed)
        frames, stride = [env.render()], 1
        acting = model.initial_acting_state(1, device)
        not_done = torch.zeros(1, dtype=torch.bool, device=device)
        ret, success, t = 0.0, None, 0
        phases: list[str | None] = []
        for t in range(1, max_steps + 1):  # t is the episode length afterwards
            x = torch.as_tensor(batch_of_one(env.observation_space, obs), device=device)
            acted = model.act(x, acting, greedy)
            chosen = acted.action[0].cpu()  # () Discrete, (D,) MultiDiscrete
            action = int(chosen) if chosen.dim() == 0 else chosen.numpy()
            obs, reward, term, trunc, info = env.step(action)
            phases.append(info.get("phase"))
            ret += float(reward)
            if t % stride == 0:
                frames.append(env.render())
            # Keep memory bounded on long episodes: halve the frames, double the stride.
            if len(frames) >= 2 * max_frames:
                frames, stride = frames[::2], stride * 2
            if term or trunc:
                success = episode_success(info, ret, cfg.env.success_return)
                if t % stride:
                    frames.append(env.render())
                break
            reward_t = torch.tensor([float(reward)], device=device)
            acting = acting.advance(acted.state, acted.action, reward_t, not_done)
    finally:
        if hook is not None:
            hook.remove()
        model.train(was_training)
        env.close()
    found: dict[str, Tensor] = {}
    if inspect and inputs and hasattr(model.core, "inspect"):
        found = inspect_episode(model.core, torch.cat(inputs, dim=1), first_state[0])
    return Episode(frames, stride, t, ret, success, found, phases)


@torch.no_grad()
def inspect_episode(core: Any, x: Tensor, state: Any) -> dict[str, Tensor]:
    """The core's ``inspect`` over one whole episode ``x`` (1, T, d_model), every step covered.

    A core that learns in chunks (Titans: ``chunk_size``) reports NaN for the steps of its last,
    unfinished chunk; ``chunk_size`` blank steps after the episode complete that chunk, and what
    a core reports for a step depends on no later step (causal), so the steps' values are
    those of a longer episode. The padding is cut off again: steps (rows) and their keys.
    """
    t = x.shape[1]
    pad = int(getattr(core, "chunk_size", 0))
    x = torch.cat([x, x.new_zeros(1, pad, x.shape[2])], dim=1)
    starts = torch.zeros(x.shape[:2], dtype=torch.bool, device=x.device)
    starts[:, 0] = True
    found = {}
    for k, v in core.inspect(x, state, starts).items():
        v = v.detach().cpu()[:t]
        found[k] = v[:, : v.shape[1] - pad] if v.dim() == 2 else v  # (T, K): the padded keys
    return found


def log_episode(
    writer: Any, model: ActorCritic, cfg: RLConfig, step: int, seed: int
) -> Episode | None:
    """Record one episode on held-out env seed ``seed`` and log it: ``episodes/video`` (GIF),
    ``episodes/*`` scalars and the core's inspection as ``memory/*`` heatmaps."""
    from mnemo.agents.rl.evaluate import HELD_OUT_SEED_OFFSET
    from mnemo.agents.rl.memory_plots import inspection_images

    if not hasattr(writer, "_get_file_writer"):  # a non-writing rank of a data-parallel run
        return None
    ep = record_episode(model, cfg, seed + HELD_OUT_SEED_OFFSET)
    log_gif(writer, "episodes/video", frames_to_gif(ep.frames), step)
    writer.add_scalar("episodes/return", ep.ret, step)
    writer.add_scalar("episodes/length", ep.length, step)
    if ep.success is not None:
        writer.add_scalar("episodes/success", float(ep.success), step)
    title = f"{cfg.core.name}, step {step}"
    for name, img in inspection_images(ep.inspect, title, ep.phases).items():
        writer.add_image(f"memory/{name}", img, step, dataformats="HWC")
    writer.flush()
    return ep


VIDEO_SUFFIXES = (".gif", ".mp4", ".webm", ".avi", ".mov", ".mkv")
"""Names that look like one video file: ``--video`` takes a folder of GIFs and events."""


def video_folder(path: str | Path) -> Path:
    """``mnemo eval --video``'s folder, created now, before a long evaluation, and refused in
    one line if it names a file (or looks like a file's name) or cannot be created."""
    from mnemo.agents.checkpoint import check_folder, make_folder

    out = check_folder(path, "--video")
    if out.suffix.lower() in VIDEO_SUFFIXES and not out.is_dir():
        raise UserError(
            f"--video takes a folder (one GIF per episode and TensorBoard events go in it), "
            f"not a file name: {path}; give a folder, e.g. {out.with_suffix('')}"
        )
    return make_folder(out, "--video")


def write_episode_gifs(
    model: ActorCritic,
    cfg: RLConfig,
    out_dir: str | Path,
    episodes: int,
    seed: int,
    greedy: bool = True,
) -> list[Path]:
    """Write ``episodes`` episodes as ``out_dir/episode_NNN_{success,fail}.gif``, log them to a
    TensorBoard event file in ``out_dir`` too, and save the memory heatmaps as PNGs."""
    from torch.utils.tensorboard import SummaryWriter

    from mnemo.agents.rl.memory_plots import inspection_images

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    with SummaryWriter(str(out)) as writer:
        for i in range(episodes):
            ep = record_episode(model, cfg, seed + i, greedy=greedy)
            gif = frames_to_gif(ep.frames)
            tag = {True: "success", False: "fail", None: "end"}[ep.success]
            path = out / f"episode_{i:03d}_{tag}.gif"
            path.write_bytes(gif)
            paths.append(path)
            log_gif(writer, "episodes/video", gif, i)
            title = f"{cfg.core.name}, episode {i}"
            for name, img in inspection_images(ep.inspect, title, ep.phases).items():
                png = out / f"episode_{i:03d}_{name}.png"
                Image.fromarray(img).save(png)
                writer.add_image(f"memory/{name}", img, i, dataformats="HWC")
    return paths
