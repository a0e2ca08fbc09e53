"""Knowledge distillation: the shared fine-tuning loop and the training-free student search."""
