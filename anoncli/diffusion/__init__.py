"""Diffusion procedures (the schedulers of diffusers' split): the noise schedule, the training
objective and deterministic DDIM decoding and inversion, for any ε-predicting network
``model(x_t, t, cond)``. The networks live in ``anoncli.models``."""
