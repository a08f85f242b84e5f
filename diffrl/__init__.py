"""diffrl: diffusion and flow policies trained on-policy in massively parallel simulators."""

__version__ = "0.1.0"
