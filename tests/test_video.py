"""Episodes in TensorBoard: GIFs written as image summaries (add_video writes nothing with
moviepy 2.x, see agents/rl/video.py), recall renders, eval --video, memory inspection images."""

from __future__ import annotations

import io
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.tensorboard import SummaryWriter

import mnemo.envs  # noqa: F401
from mnemo.agents.cli import main
from mnemo.agents.rl.video import MAX_FRAMES, frames_to_gif, log_gif, subsample

TINY = [
    "env.id=mnemo/Recall-D8-v0",
    "env.num_envs=8",
    "ppo.total_steps=256",
    "ppo.rollout_len=16",
    "ppo.bptt_len=8",
    "run.progress=false",
    "threads=1",
]


def event_bytes(run_dir: Path) -> bytes:
    return b"".join(p.read_bytes() for p in run_dir.glob("events.out.tfevents.*"))


def test_recall_renders_every_phase() -> None:
    env = gym.make("mnemo/Recall-D8-v0", render_mode="rgb_array")
    env.reset(seed=0)
    frames = [env.render()]
    done = False
    while not done:
        _, _, done, _, _ = env.step(env.unwrapped.oracle_action())
        frames.append(env.render())
    assert len(frames) == 8 + 3
    assert all(f.shape == (64, 96, 3) and f.dtype == np.uint8 for f in frames)
    assert len({f.tobytes() for f in frames}) == len(frames)  # the time bar moves every step
    plain = gym.make("mnemo/Recall-D8-v0")
    plain.reset(seed=0)
    assert plain.render() is None


def test_gif_is_animated_and_subsampled() -> None:
    frames = [np.full((10, 12, 3), i % 256, dtype=np.uint8) for i in range(500)]
    assert len(subsample(frames)) == MAX_FRAMES
    kept = subsample(frames)
    assert kept[0] is frames[0] and kept[-1] is frames[-1]
    gif = frames_to_gif(frames)
    assert gif.startswith(b"GIF89a")
    with Image.open(io.BytesIO(gif)) as im:
        assert im.n_frames > 1 and min(im.size) >= 128  # small renders are scaled up


def test_gif_summary_lands_in_event_file(tmp_path: Path) -> None:
    gif = frames_to_gif([np.zeros((8, 8, 3), np.uint8), np.ones((8, 8, 3), np.uint8) * 255])
    with SummaryWriter(str(tmp_path)) as w:
        log_gif(w, "episodes/video", gif, 3)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path), size_guidance={"images": 0})
    acc.Reload()
    (img,) = acc.Images("episodes/video")
    assert img.step == 3 and img.encoded_image_string.startswith(b"GIF89a")


def test_training_logs_episode_videos(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert (
        main(["train", "configs/recall_lstm.yaml", *TINY, "run.video_every=1", f"run.dir={run}"])
        == 0
    )
    data = event_bytes(run)
    assert data.count(b"GIF89a") == 2  # 256 steps / (8 envs x 16 steps) = 2 updates
    assert b"episodes/video" in data and b"episodes/return" in data


def test_training_ends_with_a_video_of_the_trained_policy(tmp_path: Path) -> None:
    """3 updates, a video every 2: at update 2, and the final policy's at update 3."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    args = [*TINY, "ppo.total_steps=384", "run.video_every=2", f"run.dir={run}"]
    assert main(["train", "configs/recall_lstm.yaml", *args]) == 0
    acc = EventAccumulator(str(run), size_guidance={"images": 0}).Reload()
    assert [img.step for img in acc.Images("episodes/video")] == [256, 384]


def test_eval_video_writes_gifs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run, out = tmp_path / "run", tmp_path / "video"
    assert main(["train", "configs/recall_lstm.yaml", *TINY, f"run.dir={run}"]) == 0
    assert b"GIF89a" not in event_bytes(run)  # run.video_every=0: no videos
    code = main(["eval", str(run), "--episodes", "4", "--video", str(out), "--video-episodes", "2"])
    assert code == 0
    gifs = sorted(out.glob("episode_*.gif"))
    assert len(gifs) == 2 and all(g.read_bytes().startswith(b"GIF89a") for g in gifs)
    assert event_bytes(out).count(b"GIF89a") == 2
    assert "wrote 2 episode GIFs" in capsys.readouterr().out


@pytest.mark.parametrize("core", ["trxl", "gtrxl", "compressive", "titans_mac", "titans_lmm"])
def test_inspect_images(core: str, tmp_path: Path) -> None:
    """Attention cores show where they looked; Titans shows its memory's retrieval loss."""
    from mnemo import memory
    from mnemo.agents.rl.actor_critic import ActorCritic
    from mnemo.agents.rl.config import RLConfig
    from mnemo.agents.rl.memory_plots import inspection_images
    from mnemo.agents.rl.video import record_episode
    from mnemo.memory.base import MemoryCore

    if core not in memory.core_names():
        pytest.skip(f"core {core} is not registered yet")
    torch.manual_seed(0)
    cfg = RLConfig()
    cfg.env.id, cfg.core.name, cfg.core.d_model = "mnemo/Recall-D8-v0", core, 32
    env = gym.make(cfg.env.id)
    model = ActorCritic(env.observation_space, env.action_space, cfg.core, cfg.agent)
    if type(model.core).inspect is MemoryCore.inspect:
        pytest.skip(f"core {core} does not implement the inspect hook yet")
    ep = record_episode(model, cfg, seed=1)
    if "attention" in ep.inspect:
        w = ep.inspect["attention"]
        assert w.shape[0] == ep.length and w.shape[1] >= ep.length
        assert torch.allclose(w.sum(-1), torch.ones(ep.length), atol=1e-4)
        # causal: the first query sees no later step of the episode
        assert float(w[0, w.shape[1] - ep.length + 1 :].abs().sum()) < 1e-6
    else:  # the whole episode, the unfinished last chunk (steps 8, 9) included
        loss = ep.inspect["retrieval_loss"]
        assert loss.shape == (ep.length,) and torch.isfinite(loss).all()
    assert ep.phases == ["cue"] + ["delay"] * 8 + ["query"]  # Recall-D8's, one per step
    (img,) = inspection_images(ep.inspect, "", ep.phases).values()
    assert img.ndim == 3 and img.shape[2] == 3


def test_inspecting_a_chunked_core_covers_the_last_chunk_exactly() -> None:
    """Titans reports NaN for its unfinished last chunk; the blank steps that complete it change
    no earlier step's value: they equal those of a longer episode."""
    from mnemo import memory
    from mnemo.agents.rl.video import inspect_episode

    if "titans_mac" not in memory.core_names():
        pytest.skip("no titans")
    torch.manual_seed(0)
    core = memory.make_core("titans_mac", 16, chunk_size=4, n_layers=2).eval()
    x, state = torch.randn(1, 12, 16), core.initial_state(1, "cpu")
    starts = torch.zeros(1, 12, dtype=torch.bool)
    starts[:, 0] = True
    longer = core.inspect(x, state, starts)["retrieval_loss"]
    assert torch.isnan(core.inspect(x[:, :10], state, starts[:, :10])["retrieval_loss"]).any()
    covered = inspect_episode(core, x[:, :10], state)["retrieval_loss"]
    assert covered.shape == (10,) and torch.allclose(covered, longer[:10], atol=1e-6)


def test_memory_plots_mark_the_cue_and_the_decision() -> None:
    from mnemo.agents.experiments.plots import figure_to_array
    from mnemo.agents.rl.memory_plots import attention_figure, phase_spans, retrieval_figure

    phases = ["cue", "cue", "distractor", "distractor", "distractor", "chest", "chest"]
    assert phase_spans(phases) == [("cue", 0, 1), ("distractor", 2, 4), ("chest", 5, 6)]
    assert phase_spans([None, "a", "a", None, "a"]) == [("a", 1, 2), ("a", 4, 4)]
    t = len(phases)
    weights = torch.softmax(torch.randn(t, t), -1).tril()
    for fig in (
        attention_figure(weights, "x", phases),
        retrieval_figure(torch.rand(t), "x", phases),
    ):
        texts = {txt.get_text().strip() for ax in fig.axes for txt in ax.texts}
        assert {"cue", "decision"} <= texts
        assert figure_to_array(fig).ndim == 3  # it draws (and is closed)
    plain = retrieval_figure(torch.rand(t), "x")  # an env without phases: nothing marked
    assert not any(ax.texts for ax in plain.axes)
    figure_to_array(plain)


def test_recording_videos_leaves_training_unchanged(tmp_path: Path) -> None:
    """The video hook only watches: same seed, same weights with and without it."""
    tiny = [o for o in TINY if not o.startswith("env.id")]
    weights = []
    for every in (0, 1):
        run = tmp_path / f"run{every}"
        args = ["train", "configs/recall_gtrxl.yaml", *tiny, "env.id=mnemo/Recall-D8-v0"]
        assert main([*args, f"run.video_every={every}", f"run.dir={run}"]) == 0
        weights.append(torch.load(run / "checkpoints" / "last.pt", weights_only=False)["model"])
    for k, v in weights[0].items():
        assert torch.equal(v, weights[1][k]), k
