"""Policies: Gaussian (PPO actor), diffusion (DPPO actor), residual (network separation), encoders, normaliser."""
