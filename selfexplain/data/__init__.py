"""Shared data sources: the embedded fact set (facts.jsonl + relations.json), external fact
sets (CounterFact, LRE) and the one JSONL reader every loader uses."""
