"""The optimisation loop: analyse, experiment, evaluate, qualify, deploy, monitor, re-evaluate."""
