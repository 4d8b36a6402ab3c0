"""examples/*.ipynb: up to date with their generator, and they execute with
small settings (KERAS_SPARSE_NOTEBOOK_QUICK=1) through nbclient, offline."""

import importlib.util
import os
import sys
from pathlib import Path

import pytest
from conftest import skip_or_fail_in_ci

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
NOTEBOOKS = sorted(p.name for p in EXAMPLES.glob("*.ipynb"))

@pytest.fixture
def needs_nb():
    if importlib.util.find_spec("nbformat") is None:
        skip_or_fail_in_ci("nbformat not installed (pip install -e '.[examples]')")


def _generator():
    spec = importlib.util.spec_from_file_location("make_notebooks", EXAMPLES / "make_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.usefixtures("needs_nb")
def test_notebooks_match_generator():
    gen = _generator()
    assert sorted(gen.NOTEBOOKS) == NOTEBOOKS
    assert gen.main(["--check"]) == 0


@pytest.mark.usefixtures("needs_nb")
def test_notebooks_have_install_quick_flag_and_full_recipe_switch():
    import nbformat

    for name in NOTEBOOKS:
        nb = nbformat.read(EXAMPLES / name, as_version=4)
        code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
        assert "%pip install" in code and "KERAS_SPARSE_NOTEBOOK_QUICK" in code
        assert "FULL_RECIPE = False" in code


# Part of the default run (CI executes every notebook, about 2 minutes in all).
@pytest.mark.real_data
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_executes_quick(name, monkeypatch, fashion_mnist):
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    import nbformat

    monkeypatch.setenv("KERAS_SPARSE_NOTEBOOK_QUICK", "1")
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    nb = nbformat.read(EXAMPLES / name, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3",
        resources={"metadata": {"path": str(EXAMPLES)}})
    client.execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors


def _cifar_recipe():
    spec = importlib.util.spec_from_file_location("cifar_recipe", EXAMPLES / "cifar_resnet32_recipe.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_cifar_recipe_smoke():
    rec = _cifar_recipe().main(["--smoke", "--method", "rigl", "--epochs", "1"])
    assert abs(rec["final_sparsity"] - 0.9) < 1e-3


@pytest.mark.slow
@pytest.mark.parametrize("method, sparsity", [("snip", 0.9), ("lth", 0.5)])
def test_cifar_recipe_tost_smoke(method, sparsity):
    rec = _cifar_recipe().main(["--smoke", "--method", method, "--sparsity", str(sparsity),
                                "--epochs", "1", "--tost"])
    assert rec["tost"] is True
    assert abs(rec["final_sparsity"] - sparsity) < 1e-3
    # finalize swapped Swish back to ReLU and reported what that changed
    assert abs(rec["tost_swap_accuracy_change"]) <= 1.0
    if method == "lth":
        assert rec["lth_rounds"] == 4  # 0.8 ** 3 > 0.5 >= 0.8 ** 4


def test_cifar_recipe_rejects_tost_on_a_dynamic_mask(capsys):
    with pytest.raises(SystemExit):
        _cifar_recipe().parse_args(["--method", "rigl", "--tost"])
    err = capsys.readouterr().err
    assert "--tost trains a fixed mask" in err and "rigl" in err and "snip" in err
