"""Training with optax, the data sets, and the seeds' optimisation landscapes.
Imports core (and io for saving runs).
"""
