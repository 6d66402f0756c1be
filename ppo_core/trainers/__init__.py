"""PPO trainers on top of the core: the bandit (`bandits`, ch. 01–02), CartPole (`rollout`,
`cartpole`, `checkpoint`, ch. 03) and token-level RLHF (`rlhf`, ch. 05), sharing one config
style (`config`) and one run manager (`run`)."""
