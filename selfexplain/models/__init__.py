"""Models: loading subjects and explainers (loading), tokenizing queries and decoding or
ranking answers (generation), running a shared prompt prefix once for many rows (prefix_cache)."""

from selfexplain.models.loading import LoadedModel, list_models, load_model, wrap_model

__all__ = ["LoadedModel", "list_models", "load_model", "wrap_model"]
