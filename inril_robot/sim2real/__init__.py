"""Sim-to-real transfer: named domain-randomisation presets (`sim2real.randomization`) for training in simulation
a policy meant to run on the real arm."""
