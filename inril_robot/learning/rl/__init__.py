"""Reinforcement-learning fine-tuning: the on-policy rollout buffer with GAE (`buffer`) and PPO (`ppo`)."""
