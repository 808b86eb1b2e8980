"""Established interpretability techniques run on the subject: residual-stream reading,
patching and vector injection (interventions), input attribution (attribution)."""
