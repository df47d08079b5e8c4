"""Heads on memory cores: the PPO actor-critic, the language model, and the CLI."""
