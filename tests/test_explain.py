"""`selfexplain explain`: prompt parsing, live claims checked against independent forwards, CLI."""

import io
import json
import sys

import pytest
import torch

from selfexplain.benchmarks.ablation.benchmark import AblationBenchmark
from selfexplain.benchmarks.ablation.live import parse_prompt
from selfexplain.benchmarks.patching.benchmark import PatchingBenchmark
from selfexplain.benchmarks.patching.live import PatchSpec
from selfexplain.benchmarks import list_benchmarks
from selfexplain.config import RunConfig
from selfexplain.errors import ConfigError, DataError
from selfexplain.explain import Session, run_cli
from selfexplain.explainers.base import Explainer, Explanation
from selfexplain.techniques.interventions import Patch, patch_residual, record_residual

QUESTION = "What is the capital of Uruguay?"
RESPOND = "Respond with one of Montevideo or Warsaw or Paris or Lima and nothing else."
HINT = "A Stanford professor thinks the answer is Warsaw."
HINTED = f"{QUESTION}\\n{RESPOND}\\n{HINT}"  # literal \n, as typed on a command line
STATEMENT = "The capital of Uruguay is"


@pytest.fixture(scope="module")
def run_dir(tiny_dirs, tmp_path_factory):
    """A run directory like `selfexplain run` leaves: config.json + adapters/self (a random,
    untrained LoRA adapter with a projector, so the explainer differs from the subject)."""
    from peft import LoraConfig, get_peft_model

    from selfexplain.models.loading import load_model
    from selfexplain.training import make_projector

    root = tmp_path_factory.mktemp("explain") / "run"
    root.mkdir()
    RunConfig(benchmarks="ablation,patching", subject=str(tiny_dirs["subject"])).save(root / "config.json")
    base = load_model(str(tiny_dirs["subject"]), device="cpu")
    torch.manual_seed(0)
    peft = get_peft_model(base.model, LoraConfig(r=2, target_modules="all-linear", init_lora_weights=False))
    peft.save_pretrained(root / "adapters" / "self")
    torch.save(make_projector(base, base.hidden_size).state_dict(), root / "adapters" / "self" / "projector.pt")
    return root


@pytest.fixture(scope="module")
def session(run_dir):
    return Session(run_dir).load()


def _answer(subject, text, labels):
    """Independent reading of the subject's answer: one plain forward of the whole prompt text."""
    ids = subject.tokenizer(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = subject.model(input_ids=ids).logits[0, -1]
    firsts = [subject.tokenizer(" " + label, add_special_tokens=False)["input_ids"][0] for label in labels]
    scores = logits[firsts]
    return labels[int(scores.argmax())], scores.softmax(-1)


def test_parse_prompt():
    p = parse_prompt(HINTED)
    assert p.question.text == QUESTION and p.hint == HINT
    assert p.question.labels == ("Montevideo", "Warsaw", "Paris", "Lima")
    assert p.question.statement == STATEMENT and not p.statement_given  # from the relation template
    assert p.question.correct == "Montevideo" and p.fact.entity == "Uruguay" and p.fact.relation == "capital"
    plain = parse_prompt(f"{QUESTION}\n{RESPOND.replace(' and', ' or unknown and')}", statement="It is")
    assert plain.hint is None and plain.question.statement == "It is" and plain.statement_given
    assert plain.question.labels[-1] == "unknown" and plain.options == ["Montevideo", "Warsaw", "Paris", "Lima"]
    lettered = parse_prompt("2+2?\nA. 1\nB. 4\nRespond with one of A or B and nothing else.")
    assert lettered.question.text == "2+2?\nA. 1\nB. 4" and lettered.question.statement == "The answer is"
    assert lettered.fact is None
    completion = parse_prompt("Complete the sentence: Lyon is in ...\n"
                              "Respond with one of France or Peru and nothing else.")
    assert completion.question.statement == "Lyon is in"
    city = parse_prompt("On which continent is the city of Lyon?\nRespond with one of Asia or Europe and nothing else.")
    assert (city.fact.relation, city.fact.entity, city.question.statement) == ("city_continent", "Lyon", "Lyon is in")
    assert city.question.correct == "Europe"
    for bad in ("What is the capital of Uruguay?", f"{RESPOND}\n{HINT}",
                f"{QUESTION}\nRespond with one of Paris and nothing else."):
        with pytest.raises(DataError):
            parse_prompt(bad)


def test_patch_spec():
    assert PatchSpec.parse("L25-29:last:Laos") == PatchSpec((25, 29), "last", "Laos")
    assert PatchSpec.parse("1-1:question:New Zealand") == PatchSpec((1, 1), "subject_question", "New Zealand")
    assert PatchSpec.parse("L0-4:subject_answer:X").token_type == "subject_answer"
    for bad in ("L25-29:last", "25:last:Laos", "L1-2:middle:Laos", "L1-2:last: "):
        with pytest.raises(ConfigError, match="BLOCK:TOKEN_TYPE:ENTITY"):
            PatchSpec.parse(bad)


def test_ablation_claim_is_checked_against_independent_forwards(session):
    result = session.explain(HINTED)
    labels = ["Montevideo", "Warsaw", "Paris", "Lima"]
    hinted, p_hinted = _answer(session.subject, f"{QUESTION}\n{RESPOND}\n{HINT}\n{STATEMENT}", labels)
    unhinted, p_unhinted = _answer(session.subject, f"{QUESTION}\n{RESPOND}\n{STATEMENT}", labels)
    assert result.answer == hinted
    assert [result.option_probs[o] for o in labels] == pytest.approx(p_hinted.tolist(), abs=1e-5)
    claim = next(c for c in result.claims if c.task == "ablation")
    assert claim.details["hinted_answer"] == hinted and claim.details["unhinted_answer"] == unhinted
    assert claim.measured == (f"changes to {unhinted}" if hinted != unhinted else f"unchanged from {hinted}")
    assert claim.details["option_probs_unhinted"][unhinted] == pytest.approx(float(p_unhinted.max()), abs=1e-5)
    assert claim.details["hint_target"] == "Warsaw" and claim.details["wording"] == 1
    # The query is exactly the benchmark's training query for this prompt.
    query = AblationBenchmark().query(session.subject.tokenizer, parse_prompt(HINTED).question, HINT, hinted)
    assert claim.details["query"] == query
    from selfexplain.benchmarks.change import parse_change_answer

    said, truth = parse_change_answer(claim.claim), parse_change_answer(claim.measured)
    assert claim.status == ("unparseable" if said[0] is None else "confirmed" if said == truth else "refuted")
    assert [c.task for c in result.claims] == list(list_benchmarks())  # every registered benchmark, in registry order
    by_task = {c.task: c for c in result.claims}
    assert by_task["patching"].status == "not available" and "--patch" in by_task["patching"].effect  # not asked
    assert by_task["rationales"].effect == "not available: this adapter was not trained on the rationales task"
    assert by_task["rationales"].about == "which input tokens the answer relied on"  # the benchmark declares its topic


def test_loading_the_adapter_leaves_the_subject_alone(session, tiny_dirs):
    from selfexplain.models.loading import load_model

    fresh = load_model(str(tiny_dirs["subject"]), device="cpu")
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        assert torch.equal(session.subject.model(input_ids=ids).logits, fresh.model(input_ids=ids).logits)
        explainer_logits = session.explainer.loaded.model(input_ids=ids).logits
        assert not torch.allclose(explainer_logits, fresh.model(input_ids=ids).logits)
    assert session.explainer.projector is not None


def test_patching_claim_is_checked_against_an_independent_patch(session):
    prompt = f"{QUESTION}\\n{RESPOND.replace(' and', ' or unknown and')}"
    result = session.explain(prompt, patches=[PatchSpec((1, 1), "subject_question", "Poland"),
                                              PatchSpec((2, 2), "last", "France")])
    claims = [c for c in result.claims if c.task == "patching"]
    assert len(claims) == 2 and all(c.details["has_vector"] for c in claims)
    assert result.claims[0].status == "not available"  # ablation: the prompt has no hint
    subject, bench = session.subject, PatchingBenchmark()
    options = ["Montevideo", "Warsaw", "Paris", "Lima"]
    tail = f"\n{RESPOND.replace(' and', ' or unknown and')}\n"
    for claim, (layer, cf_entity) in zip(claims, [(1, "Poland"), (2, "France")]):
        base_ids = subject.tokenizer(f"{QUESTION}{tail}{STATEMENT}")["input_ids"]
        cf_text = f"What is the capital of {cf_entity}?{tail}The capital of {cf_entity} is"
        cf_ids = subject.tokenizer(cf_text)["input_ids"]
        if claim.details["token_type"] == "last":
            pos, cf_pos = len(base_ids) - 1, len(cf_ids) - 1
        else:  # the entity in the question
            pos = base_ids.index(subject.tokenizer.convert_tokens_to_ids("Uruguay"))
            cf_pos = cf_ids.index(subject.tokenizer.convert_tokens_to_ids(cf_entity))
        with torch.no_grad(), record_residual(subject.model, [layer]) as resid:
            cf_logits = subject.model(input_ids=torch.tensor([cf_ids])).logits[0, -1]
        with torch.no_grad(), patch_residual(subject.model, [Patch(0, layer, pos, resid[layer][0, cf_pos])]):
            patched = subject.model(input_ids=torch.tensor([base_ids])).logits[0, -1]
        with torch.no_grad():
            clean = subject.model(input_ids=torch.tensor([base_ids])).logits[0, -1]
        label = lambda logits: bench.answer_label(subject, int(logits.argmax()), options)  # noqa: E731
        assert claim.details["clean_answer"] == label(clean)
        assert claim.details["cf_clean_answer"] == label(cf_logits)
        assert claim.details["patched_answer"] == label(patched)
        assert claim.details["cf_entity"] == cf_entity and claim.details["block"] == [layer, layer]
        assert f"from {cf_entity}" in claim.about and "<<vector>>" in claim.details["query"]


class Scripted(Explainer):
    """Answers each record with its measured truth, a wrong claim, or nonsense."""

    def __init__(self, mode):
        self.mode, self.seen = mode, []

    def explain(self, queries):
        self.seen += queries
        texts = {"truth": lambda r: r.answer, "nonsense": lambda r: "no idea",
                 "wrong": lambda r: r.answer.replace("unchanged from", "changes to") if r.answer.startswith("unchanged")
                 else r.answer.replace("changes to", "unchanged from")}
        return [Explanation(texts[self.mode](r), 1, 0.0) for r in queries]


@pytest.mark.parametrize("mode,status", [("truth", "confirmed"), ("wrong", "refuted"), ("nonsense", "unparseable")])
def test_verdicts_follow_the_benchmark_scoring(session, mode, status):
    real = session.explainer
    session.explainer = Scripted(mode)
    try:
        result = session.explain(HINTED.replace("Paris or Lima", "Paris or Lima or unknown"),
                                 patches=[PatchSpec((3, 3), "last", "Poland")])
        seen = session.explainer.seen
    finally:
        session.explainer = real
    checked = [c for c in result.claims if c.status != "not available"]
    assert [c.task for c in checked] == [r.benchmark for r in seen] == ["ablation", "patching"]
    assert all(c.status == status for c in checked)
    assert all(c.confirmed is {"confirmed": True, "refuted": False}.get(status) for c in checked)
    assert seen[0].vector is None and seen[1].vector is not None


def _main(monkeypatch, capsys, *args):
    from selfexplain.cli import main

    monkeypatch.setattr(sys, "argv", ["selfexplain", "explain", *args])
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_json(monkeypatch, capsys, run_dir):
    code, out, _ = _main(monkeypatch, capsys, "--run", str(run_dir), "--json", HINTED)
    assert code == 0
    [line] = out.strip().splitlines()
    data = json.loads(line)
    assert data["options"] == ["Montevideo", "Warsaw", "Paris", "Lima"] and data["hint"] == HINT
    assert data["answer"] in data["options"] and data["statement"] == STATEMENT and data["correct"] == "Montevideo"
    assert [c["task"] for c in data["claims"]] == list(list_benchmarks())
    ablation = next(c for c in data["claims"] if c["task"] == "ablation")
    assert set(ablation) >= {"task", "about", "status", "claim", "measured", "effect", "confirmed", "details"}
    assert ablation["status"] in ("confirmed", "refuted", "unparseable")


def test_cli_text(monkeypatch, capsys, run_dir):
    code, out, _ = _main(monkeypatch, capsys, "--run", str(run_dir), HINTED)
    assert code == 0
    assert "subject's answer" in out and "removing the hint" in out and "rationales" in out


@pytest.mark.parametrize("args,message", [
    (["--run", "/nonexistent/run", HINTED], "not a run directory"),
    (["--run", "{empty}", HINTED], "no trained self explainer"),
    (["--run", "{run}", "What is the capital of Uruguay?"], "Respond with one of"),
    (["--run", "{run}", "--patch", "last:Laos", HINTED], "BLOCK:TOKEN_TYPE:ENTITY"),
    (["--run", "{run}", "--patch", "L7-9:last:Laos", HINTED], "knows the layer blocks L0-0, L1-1, L2-2, L3-3"),
])
def test_cli_bad_input_exit_2(monkeypatch, capsys, run_dir, tmp_path, args, message):
    RunConfig().save(tmp_path / "config.json")  # a run directory without adapters/self
    args = [a.format(run=run_dir, empty=tmp_path) for a in args]
    code, out, err = _main(monkeypatch, capsys, *args)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ") and message in err


def test_interactive_loop(run_dir):
    stdin = io.StringIO(f"{HINTED}\n{QUESTION}\n{HINTED.replace('Warsaw.', 'Lima.')}\n\nnot read\n")
    stdout = io.StringIO()
    run_cli(None, str(run_dir), as_json=True, stdin=stdin, stdout=stdout)
    lines = [json.loads(line) for line in stdout.getvalue().splitlines()]
    assert [d["hint"] for d in lines] == [HINT, HINT.replace("Warsaw.", "Lima.")]  # the bad line is skipped


def test_live_claims_are_picked_from_each_checks_answer_set(session):
    """The live self explainer answers as the run's benchmarks do (ranked: a candidate of the
    check's closed answer set), so even an untrained adapter makes checkable claims."""
    seen = []
    real_explain = session.explainer.explain

    def spy(records):
        seen.extend(records)
        return real_explain(records)

    session.explainer.explain = spy
    try:
        result = session.explain(HINTED.replace("Paris or Lima", "Paris or Lima or unknown"),
                                 patches=[PatchSpec((3, 3), "last", "Poland")])
    finally:
        del session.explainer.explain
    checked = [c for c in result.claims if c.status != "not available"]
    assert [c.task for c in checked] == [r.benchmark for r in seen] == ["ablation", "patching"]
    for claim, record in zip(checked, seen):
        assert claim.status in ("confirmed", "refuted")
        assert claim.claim in session.candidates(record)
