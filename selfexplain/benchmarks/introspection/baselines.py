"""Introspection's own explainers: the mode baseline, and the mirror pair of the 2x2 design.

The mirror pair is trained on the *other* model's behaviour at the run's training budget:
`other-on-itself` (the other model + LoRA) and `subject-on-other` (the subject + LoRA). With the
run's `self` and `other` (both trained on the subject's behaviour) they form the 2x2.
"""

from __future__ import annotations

from typing import Callable, Sequence

from selfexplain.benchmarks.base import BaselineEnv, BaselineSpec
from selfexplain.explainers.base import Explainer, Explanation, Stopwatch
from selfexplain.models.generation import Decoding
from selfexplain.models.loading import LoadedModel
from selfexplain.records import Record

OTHER_ON_ITSELF = "other-on-itself"
SUBJECT_ON_OTHER = "subject-on-other"


class ModeExplainer(Explainer):
    """Always the most common answer of the training records (Binder et al.'s baseline): per
    property and family where the family was trained on, per property otherwise. Its distribution
    over the candidates is fitted at ground-truth time on training records (context['mode_probs'])."""

    name = "most-common"
    description = "always the most common training answer (per property; per family where trained on)"

    def explain(self, queries: Sequence[Record]) -> list[Explanation]:
        with Stopwatch() as sw:
            probs = [dict(q.context["mode_probs"]) for q in queries]
        return [Explanation(max(p, key=p.get), 0, sw.per_item(len(queries)), probabilities=p) for p in probs]


def mirrored(record: Record, with_answer: bool) -> Record:
    """The same prompt and property about the other model: its query lists the other model's
    candidates; training records carry its value as the answer."""
    c = record.context
    return Record(id=record.id, benchmark=record.benchmark, split=record.split, group=record.group,
                  query=c["other_query"], answer=c["other_value"] if with_answer else "",
                  provenance=record.provenance,
                  context={"candidates": list(c["other_candidates"]), "property": c["property"],
                           "family": c["family"]})


class MirrorExplainer(Explainer):
    """A LoRA explainer trained on the other model's behaviour (the run's training budget);
    its answers declare that they predict the other model (Explanation.fields['predicts'])."""

    def __init__(self, name: str, description: str, load: Callable[[], LoadedModel], env: BaselineEnv,
                 bench_name: str, candidates: Callable[[Record], list[str]]):
        self.name, self.description = name, description
        self._load, self.env, self.bench_name, self._candidates = load, env, bench_name, candidates
        self.lora = None

    def fit(self, train: Sequence[Record]) -> None:
        from selfexplain.explainers.lora import LoRAExplainer
        from selfexplain.progress import bar
        from selfexplain.runs.run import explainer_train_config
        from selfexplain.training import fingerprint, training_steps

        records = [mirrored(r, with_answer=True) for r in train]
        cfg = explainer_train_config(self.env.config, [self.bench_name], trains_projector=False)
        # Keyed by records and config, so reruns and resumed runs reuse (or resume) the adapter.
        out = self.env.cache_dir / "introspection-mirror" / f"{self.name}-{fingerprint(records, cfg)[:16]}"
        self.lora = LoRAExplainer(self.name, self._load, cfg, out, self.description,
                                  decoding=Decoding(candidates=self._candidates))
        with bar(f"training '{self.name}' on {len(records)} records of the other model's behaviour",
                 training_steps(records, cfg)) as advance:
            done = [0]

            def progress(step: int, total: int, loss: float) -> None:
                advance(step - done[0], f"loss {loss:.3f}")
                done[0] = step
            self.lora.progress = progress
            self.lora.fit(records)

    def explain(self, queries: Sequence[Record]) -> list[Explanation]:
        if self.lora is None:
            raise RuntimeError(f"explainer '{self.name}' must be fitted before explain()")
        out = self.lora.explain([mirrored(q, with_answer=False) for q in queries])
        for e in out:
            e.fields = {"predicts": "other"}
        return out


def baseline_specs(bench) -> list[BaselineSpec]:
    specs = [BaselineSpec("most-common", "heuristic", ModeExplainer.description, lambda env: ModeExplainer())]
    if not bench.mirror:
        return specs

    def other_model(env: BaselineEnv) -> LoadedModel:
        from selfexplain.models.loading import load_model
        from selfexplain.progress import status

        with status(f"loading {env.config.other} for '{OTHER_ON_ITSELF}'"):
            return load_model(env.config.other, trust_remote_code=env.config.trust_remote_code)

    def subject_copy(env: BaselineEnv) -> LoadedModel:
        from selfexplain.explainers.lora import copy_of

        return copy_of(env.subject())

    for name, desc, load in (
            (OTHER_ON_ITSELF, "the other model + LoRA trained on its own behaviour (mirror of 'self'); scored on "
                              "the other model's answers", other_model),
            (SUBJECT_ON_OTHER, "the subject + LoRA trained on the other model's behaviour (mirror of 'other'); "
                               "scored on the other model's answers", subject_copy)):
        specs.append(BaselineSpec(
            name, "reference", desc,
            (lambda n, d, ld: lambda env: MirrorExplainer(n, d, lambda: ld(env), env, bench.name, bench.candidates))(
                name, desc, load), reference=True))
    return specs
