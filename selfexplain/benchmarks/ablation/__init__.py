"""The ablation benchmark."""
