"""The memoryless control cannot beat chance through its own actions.

Where actions are free (Recall's delay, KeyChest's distractor room) a policy can "say" the cue
with its actions and read it back from its previous-action input: a memory without a core. A
state-less policy is trained here by imitating a script that does exactly that, once with the
control's real inputs (as ``mnemo train`` and ``mnemo compare`` build them) and once with the
previous action forced in. The first must stay at chance; the second shows the test can see the
channel at all.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from mnemo.agents.config_loader import ConfigError
from mnemo.agents.experiments.compare import plan_runs
from mnemo.agents.rl.actor_critic import ActingState, ActorCritic
from mnemo.agents.rl.config import AgentConfig, CoreConfig, load_rl_config
from mnemo.agents.rl.vector_env import make_vector_env
from mnemo.envs.keychest.common import CHEST, FORWARD, LEFT, RIGHT

Script = Callable[[object, torch.Tensor], torch.Tensor]
"""(vector env, previous actions (N,)) -> the script's actions (N,), from privileged state."""


def recall_script(env, prev_action: torch.Tensor) -> torch.Tensor:
    """Say the symbol at the cue, repeat the previous action ever after (the answer included)."""
    return torch.where(env.t == 0, env.symbol, prev_action)


SLOT_DIRECTION = torch.tensor([3, 2, 0, 1])
"""The direction to face each of KeyChest-Match's chest slots (front, left, right, behind) from
the chest room's start, where the agent faces up (minigrid: 0 right, 1 down, 2 left, 3 up)."""


def keychest_script(env, prev_action: torch.Tensor) -> torch.Tensor:
    """Three actions, three codes: say the key's colour (the 4th shares a code) until the chest
    room, then turn to the key's chest and open it (the twin's state is the script's eyes)."""
    slot = (env.chest_colors == env.key_color.unsqueeze(1)).long().argmax(1)
    target = SLOT_DIRECTION[slot]
    # Turn right unless the chest is just left: the chest behind (whose key shares code 2 with
    # the right one) then only ever looks like the right one, never like the left one.
    to_chest = torch.where(
        env.dir == target, FORWARD, torch.where((env.dir + 3) % 4 == target, LEFT, RIGHT)
    )
    code = torch.where(env.t == 0, env.key_color.clamp(max=2), prev_action)
    return torch.where(env._phase(env.t) == CHEST, to_chest, code)


def imitate(
    env_id: str, script: Script, agent: AgentConfig, steps: int, n: int, iters: int = 300
) -> ActorCritic:
    """A state-less policy (core ``none``) trained to copy ``script`` from its own inputs."""
    torch.manual_seed(0)
    env = make_vector_env(env_id, n, "cpu")  # the tensor twin: its state is the script's eyes
    model = ActorCritic(
        env.single_observation_space, env.single_action_space, CoreConfig("none", 32), agent
    )
    obs, _ = env.reset(seed=0)
    acting = model.initial_acting_state(n, "cpu")
    record: dict[str, list[torch.Tensor]] = {k: [] for k in ("obs", "a", "r", "start", "target")}
    for _ in range(steps):
        target = script(env, acting.prev_action)
        for k, v in zip(
            record, (obs, acting.prev_action, acting.prev_reward, acting.episode_start, target)
        ):
            record[k].append(v)
        obs, reward, term, trunc, _ = env.step(target)
        acting = acting.advance(acting.core, target, reward, term | trunc)
    data = {k: torch.stack(v, 1) for k, v in record.items()}  # (n, steps, ...)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(iters):
        out = model(data["obs"], data["a"], data["r"], model.initial_state(n, "cpu"), data["start"])
        loss = torch.nn.functional.cross_entropy(out.logits.flatten(0, 1), data["target"].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


@torch.no_grad()
def success_rate(model: ActorCritic, env_id: str, episodes: int) -> float:
    """Greedy success over ``episodes`` held-out episodes (600: one standard error ~0.018)."""
    n = 64
    env = make_vector_env(env_id, n, "cpu")
    obs, _ = env.reset(seed=12345)
    acting: ActingState = model.initial_acting_state(n, "cpu")
    successes: list[float] = []
    while len(successes) < episodes:
        acted = model.act(obs, acting, greedy=True)
        obs, reward, term, trunc, info = env.step(acted.action)
        done = term | trunc
        successes += info["success"][done].float().tolist()
        acting = acting.advance(acted.state, acted.action, reward, done)
    return sum(successes[:episodes]) / episodes


CASES = [
    # env id, script, imitation steps per env (32 envs for Recall, 16 for KeyChest), config of
    # the control. KeyChest at D16: the channel does not care about the delay, and short
    # episodes keep the chest room (where the code is read) a tenth of the imitation data.
    ("mnemo/Recall-D64-v0", recall_script, 264, 32, "configs/recall_none.yaml"),
    ("mnemo/KeyChest-Match-D16-v0", keychest_script, 100, 16, "configs/keychest_match_none.yaml"),
]
CHANCE = 0.25  # both tasks have 4 answers


@pytest.mark.parametrize("env_id,script,steps,n,config", CASES)
def test_control_cannot_carry_the_cue_in_its_actions(env_id, script, steps, n, config):
    agent = load_rl_config(config, [f"env.id={env_id}"]).agent
    assert not agent.prev_action and not agent.prev_reward
    honest = success_rate(imitate(env_id, script, agent, steps, n), env_id, 600)
    assert honest <= CHANCE + 0.05
    # The same imitation with the previous action fed in finds the channel: the test can see it.
    leaky = AgentConfig(prev_action=True)
    cheat = success_rate(imitate(env_id, script, leaky, steps, n), env_id, 600)
    assert cheat >= CHANCE + 0.4


def test_control_refuses_its_previous_action_and_compare_never_feeds_it() -> None:
    with pytest.raises(ConfigError, match=r"agent\.prev_action: the memoryless control"):
        load_rl_config("configs/recall_none.yaml", ["agent.prev_action=true"])
    with pytest.raises(ConfigError, match=r"agent\.prev_reward"):
        load_rl_config("configs/recall_none.yaml", ["agent.prev_reward=true"])
    # compare closes the channel for every core, whatever the config says...
    specs = plan_runs(
        "none,lstm", "mnemo/Recall-D16-v0", 1, "unused", config="configs/recall_lstm.yaml"
    )
    assert all(not s.config["agent"]["prev_action"] for s in specs)
    assert all(not s.config["agent"]["prev_reward"] for s in specs)
    # ...and refuses to open it on the command line.
    with pytest.raises(ConfigError, match="never feeds"):
        plan_runs("lstm", "mnemo/Recall-D16-v0", 1, "unused", overrides=["agent.prev_action=true"])
