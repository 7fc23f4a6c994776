"""Test-wide settings: one torch thread.

The tests run many tiny tensor operations, where handing work between threads
costs more than the work (20-60x slower on a busy 2-core machine), and one
thread makes every number independent of the machine's core count.
"""
import torch

torch.set_num_threads(1)
