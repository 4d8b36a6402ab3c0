"""The accuracy table's check of the papers' orderings."""

import pytest

from benchmarks import accuracy, harness, paper_orderings


def _row(method, acc, std, n, sparsity=0.95, distribution="erk", model="small_cnn"):
    return {"method": method, "model": model, "sparsity": sparsity, "distribution": distribution,
            "n": n, "acc_mean": acc, "acc_std": std}


def test_verdict_uses_two_standard_errors_of_the_difference():
    # se = sqrt(0.01^2/3 + 0.01^2/3) = 0.816 points: 2 se = 1.63 points.
    lead = paper_orderings.verdict(_row("a", 0.90, 0.01, 3), _row("b", 0.88, 0.01, 3))
    assert lead["verdict"] == "above"
    assert lead["diff"] == pytest.approx(2.0)
    assert lead["se"] == pytest.approx(0.8165, abs=1e-3)
    assert paper_orderings.verdict(_row("a", 0.89, 0.01, 3), _row("b", 0.88, 0.01, 3))["verdict"] == \
        "within noise"
    assert paper_orderings.verdict(_row("a", 0.86, 0.01, 3), _row("b", 0.88, 0.01, 3))["verdict"] == "below"


def test_one_seed_is_not_given_a_verdict():
    out = paper_orderings.verdict(_row("a", 0.95, 0.0, 1), _row("b", 0.80, 0.01, 3))
    assert out == {"diff": pytest.approx(15.0), "se": None, "verdict": "needs 2+ seeds"}


def test_chains_become_adjacent_pairs_and_missing_rows_are_skipped():
    rows = [_row("neurrev", 0.90, 0.002, 3), _row("rigl", 0.89, 0.002, 3), _row("set", 0.89, 0.002, 3),
            _row("static", 0.87, 0.002, 3),
            # at 98% SET is missing: only NeurRev vs RigL can be compared there
            _row("neurrev", 0.85, 0.002, 3, 0.98), _row("rigl", 0.86, 0.002, 3, 0.98),
            _row("static", 0.80, 0.002, 3, 0.98)]
    out = [r for r in paper_orderings.evaluate(rows) if r["claim"].startswith("NeurRev")]
    pairs = [(r["sparsity"], r["higher"], r["lower"], r["verdict"]) for r in out]
    assert pairs == [(0.95, "neurrev", "rigl", "above"), (0.95, "rigl", "set", "within noise"),
                     (0.95, "set", "static", "above"), (0.98, "neurrev", "rigl", "below")]


def test_global_granet_is_compared_with_the_per_layer_gmp_row():
    rows = [_row("granet_global", 0.91, 0.001, 3, 0.9, "global"), _row("gmp", 0.90, 0.001, 3, 0.9)]
    (out,) = paper_orderings.evaluate(rows)
    assert (out["claim"], out["higher"], out["lower"], out["verdict"]) == \
        ("GraNet (global) > GMP", "granet_global", "gmp", "above")


def test_every_claimed_method_is_a_planned_row():
    args = accuracy.parse_args([])
    planned = {(k.method, k.model, float(k.sparsity), k.distribution) for k in accuracy.plan(args)}
    for claim in paper_orderings.CLAIMS:
        for s in claim.sparsities:
            for i, m in enumerate(claim.chain):
                assert m in harness.REGISTRY
                assert (m, claim.model, s, claim.distribution_of(i)) in planned, (claim.name, m, s)


def test_render_summarises_each_claim():
    rows = [_row("snip_tost", 0.88, 0.002, 3), _row("snip", 0.87, 0.002, 3),
            _row("snip_tost", 0.85, 0.0, 1, 0.98), _row("snip", 0.86, 0.0, 1, 0.98)]
    md = paper_orderings.render(paper_orderings.evaluate(rows), {"snip": "SNIP"})
    assert "SNIP + ToST > SNIP (small_cnn): of 2 comparison(s), 1 above, 1 needs 2+ seeds." in md
    assert "| SNIP: 87.00% (n=3) |" in md
    assert paper_orderings.render([]) == "No claim has both of its rows yet."


@pytest.mark.full
def test_report_writes_the_orderings_section_and_json(tmp_path):
    import json

    budget = accuracy.budgets(accuracy.parse_args([]))["small_cnn"]
    results = tmp_path / "accuracy.jsonl"
    with results.open("w") as f:
        for method, accs in (("neurrev", (0.900, 0.902, 0.901)), ("rigl", (0.880, 0.881, 0.882))):
            for seed, acc in enumerate(accs):
                f.write(json.dumps({"method": method, "model": "small_cnn", "sparsity": 0.95,
                                    "distribution": "erk", "seed": seed, "status": "ok",
                                    "test_accuracy": acc, "final_sparsity": 0.95,
                                    "budget_id": budget.fingerprint}) + "\n")
    assert accuracy.main(["--report-only", "--results", str(results)]) == 0
    md = (tmp_path / "accuracy.md").read_text()
    assert "### The papers' orderings" in md
    assert "NeurRev >= RigL >= SET > static (small_cnn): of 1 comparison(s), 1 above." in md
    (row,) = json.loads((tmp_path / "accuracy.json").read_text())["orderings"]
    assert (row["higher"], row["lower"], row["verdict"]) == ("neurrev", "rigl", "above")
    assert row["diff"] == pytest.approx(2.0)
