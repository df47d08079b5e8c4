"""The reinforcement-learning head: actor-critic on a memory core, its encoders, vector envs,
rollouts and GAE, PPO, ``mnemo train``, evaluation and episode videos."""
