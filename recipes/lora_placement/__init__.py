"""The LoRA-placement experiment (``python recipes/lora_placement/run.py``): stages, configuration and report."""
