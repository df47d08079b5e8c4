from __future__ import annotations

import torch
from torch.distributions import Categorical

from mnemo.agents.rl.actor_critic import ActingState
from mnemo.agents.rl.config import load_rl_config
from mnemo.agents.rl.ppo import PPO
from mnemo.agents.rl.rollout import compute_gae, sequence_minibatches
from mnemo.memory.base import tree_map


def brute_gae(reward, value, done, last_value, gamma, lam):
    n, length = reward.shape
    adv = torch.zeros(n, length)
    for i in range(n):
        for t in range(length):
            a, discount = 0.0, 1.0
            for k in range(t, length):
                nv = last_value[i] if k == length - 1 else value[i, k + 1]
                live = 0.0 if done[i, k] else 1.0
                a += discount * (reward[i, k] + gamma * nv * live - value[i, k])
                if done[i, k]:
                    break
                discount *= gamma * lam
            adv[i, t] = a
    return adv


def test_gae_stops_at_episode_ends() -> None:
    torch.manual_seed(0)
    r, v = torch.randn(3, 9), torch.randn(3, 9)
    done = torch.rand(3, 9) < 0.3
    last = torch.randn(3)
    adv, ret = compute_gae(r, v, done, last, 0.9, 0.8)
    torch.testing.assert_close(adv, brute_gae(r, v, done, last, 0.9, 0.8))
    torch.testing.assert_close(ret, adv + v)


def test_stored_chunk_states_replay_acting_exactly() -> None:
    """Training sequences, run from the stored chunk states, give the acting log-probs."""
    cfg = load_rl_config(
        None,
        [
            "env.num_envs=6",
            "ppo.minibatches=3",
            "ppo.rollout_len=24",
            "ppo.bptt_len=8",
            "env.id=mnemo/Recall-D8-v0",
            "run.progress=false",
        ],
    )
    ppo = PPO(cfg)
    ppo.collect()  # a second rollout starts mid-episode: the stored states matter
    ro, last_value = ppo.collect()
    assert len(ro.chunk_states) == 3
    adv, ret = compute_gae(ro.reward, ro.value, ro.done, last_value, 0.99, 0.95)
    seen = 0
    with torch.no_grad():
        for mb in sequence_minibatches(ro, adv, ret, 3, torch.Generator().manual_seed(0)):
            out = ppo.model(mb.obs, mb.prev_action, mb.prev_reward, mb.state, mb.episode_start)
            logprob = Categorical(logits=out.logits).log_prob(mb.action)
            torch.testing.assert_close(logprob, mb.logprob, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(out.value, mb.value, atol=1e-5, rtol=1e-5)
            seen += mb.obs.shape[0]
    assert seen == 18


def test_act_samples_as_categorical_and_folds_the_env_answer_in() -> None:
    """``act`` draws what ``Categorical.sample`` draws from the same seed, with or without an
    explicit generator; greedy takes the argmax; ``advance`` carries the step to the next."""
    cfg = load_rl_config(None, ["env.num_envs=5", "ppo.minibatches=1", "env.id=mnemo/Recall-D8-v0"])
    ppo = PPO(cfg)
    model, env_obs = ppo.model, ppo.obs
    acting = model.initial_acting_state(5, "cpu")
    with torch.no_grad():
        torch.manual_seed(7)
        drawn = model.act(env_obs, acting).action
        with_generator = model.act(env_obs, acting, generator=torch.Generator().manual_seed(7))
        out = model.step(env_obs, acting)
        torch.manual_seed(7)
        expected = Categorical(logits=out.logits[:, 0]).sample()
        greedy = model.act(env_obs, acting, greedy=True)
    assert torch.equal(drawn, expected) and torch.equal(with_generator.action, expected)
    assert torch.equal(greedy.action, out.logits[:, 0].argmax(-1))
    torch.testing.assert_close(greedy.value, out.value[:, 0])
    done = torch.tensor([True, False, False, True, False])
    nxt = acting.advance(greedy.state, greedy.action, torch.ones(5), done)
    assert torch.equal(nxt.prev_action, greedy.action) and torch.equal(nxt.episode_start, done)
    assert isinstance(tree_map(lambda t: t.clone(), nxt), ActingState)
