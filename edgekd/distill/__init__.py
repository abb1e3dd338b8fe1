"""Knowledge distillation: pure loss functions, methods built on them, and the trainer.

- ``functional``: losses as pure functions of tensors (like ``torch.nn.functional``).
- ``methods``: one file per method; a method names the taps it needs and returns its loss terms
  by name; a registry maps config names to methods.
- ``trainer``: the training loop shared by distillation, baselines and teacher training.
"""
