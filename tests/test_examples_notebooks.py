"""examples/*.ipynb: each matches its jupytext source examples/notebooks/<name>.py
(percent format, the source of truth; `make notebooks` writes the .ipynb from it),
and they execute with small settings (KERAS_SPARSE_NOTEBOOK_QUICK=1) through
nbclient, offline."""

import importlib
import importlib.util
import os
import shlex
import shutil
from pathlib import Path

import pytest
from testing import skip_or_fail_in_ci

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
NOTEBOOKS = sorted(p.name for p in EXAMPLES.glob("*.ipynb"))
# The install cell up to here is plain Python (no %pip), run below without a network.
INSTALL_STEP = '\nif importlib.util.find_spec("keras_sparse") is None:\n    pip_args, checkout = install_source()'


@pytest.fixture
def needs_nb():
    for module in ("nbformat", "jupytext"):
        if importlib.util.find_spec(module) is None:
            skip_or_fail_in_ci(f"{module} not installed (pip install -e '.[examples]')")


def _source(examples, name):
    """The notebook `name` (.ipynb) as jupytext reads its paired examples/notebooks/*.py."""
    import jupytext

    return jupytext.read(examples / "notebooks" / name.replace(".ipynb", ".py"), fmt="py:percent")


def _cells(nb):
    return [(c.cell_type, c.source) for c in nb.cells if c.cell_type in ("code", "markdown")]


def stale_notebooks(examples):
    """Names of the notebooks in `examples` whose code and markdown cells differ from
    jupytext's reading of their paired notebooks/<name>.py, or that have no pair."""
    import nbformat

    notebooks = {p.stem for p in examples.glob("*.ipynb")}
    sources = {p.stem for p in (examples / "notebooks").glob("*.py")}
    stale = {f"{stem}.ipynb" for stem in notebooks ^ sources}
    for stem in notebooks & sources:
        nb = nbformat.read(examples / f"{stem}.ipynb", as_version=4)
        if _cells(nb) != _cells(_source(examples, f"{stem}.ipynb")):
            stale.add(f"{stem}.ipynb")
    return sorted(stale)


@pytest.mark.usefixtures("needs_nb")
def test_notebooks_match_their_jupytext_sources():
    assert len(NOTEBOOKS) == 4
    assert stale_notebooks(EXAMPLES) == [], "run `make notebooks` after editing examples/notebooks/*.py"


@pytest.mark.usefixtures("needs_nb")
def test_editing_one_side_of_a_pair_makes_it_stale(tmp_path):
    import nbformat

    examples = tmp_path / "examples"
    shutil.copytree(EXAMPLES / "notebooks", examples / "notebooks")
    for name in NOTEBOOKS:
        shutil.copy(EXAMPLES / name, examples / name)
    assert stale_notebooks(examples) == []

    source = examples / "notebooks" / "quickstart_static_erk.py"
    text = source.read_text(encoding="utf-8")
    assert text.count("SPARSITY = 0.9\n") == 1
    source.write_text(text.replace("SPARSITY = 0.9\n", "SPARSITY = 0.8\n"), encoding="utf-8")
    assert stale_notebooks(examples) == ["quickstart_static_erk.ipynb"]  # .py edited alone
    source.write_text(text, encoding="utf-8")
    assert stale_notebooks(examples) == []

    path = examples / "pruning_at_init_tost.ipynb"
    nb = nbformat.read(path, as_version=4)
    nb.cells[-1].source += " (edited)"
    nbformat.write(nb, path)
    assert stale_notebooks(examples) == ["pruning_at_init_tost.ipynb"]  # .ipynb edited alone

    (examples / "notebooks" / "tflite_on_device_training.py").unlink()
    assert stale_notebooks(examples) == ["pruning_at_init_tost.ipynb", "tflite_on_device_training.ipynb"]


@pytest.mark.usefixtures("needs_nb")
def test_every_notebook_has_the_same_install_cell():
    cells = {name: [c.source for c in _source(EXAMPLES, name).cells
                    if c.cell_type == "code" and "%pip install" in c.source] for name in NOTEBOOKS}
    assert all(len(found) == 1 for found in cells.values()), cells
    assert len({found[0] for found in cells.values()}) == 1


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
    _execute_quick(name, monkeypatch)


def _execute_quick(name, monkeypatch, replace=None):
    """Runs the notebook through nbclient in quick mode; `replace`: {old: new} cell text."""
    for module in ("nbclient", "ipykernel"):  # under CI a missing one fails, not skips
        if importlib.util.find_spec(module) is None:
            skip_or_fail_in_ci(f"{module} not installed (pip install -e '.[examples]')")
    import nbclient
    import nbformat

    monkeypatch.setenv("KERAS_SPARSE_NOTEBOOK_QUICK", "1")
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    nb = nbformat.read(EXAMPLES / name, as_version=4)
    for old, new in (replace or {}).items():
        cells = [c for c in nb.cells if c.cell_type == "code" and old in c.source]
        assert len(cells) == 1, f"{old!r} is in {len(cells)} code cells of {name}"
        cells[0].source = cells[0].source.replace(old, new)
    client = nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3",
        resources={"metadata": {"path": str(EXAMPLES)}})
    client.execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors
    return nb


# The pruning-at-init notebook's lottery-ticket branch (METHOD = "lth"), quick
# mode: 2 IMP rounds of 1 epoch on 2k images before the two training runs.
@pytest.mark.real_data
def test_pai_tost_notebook_executes_quick_lth(monkeypatch, fashion_mnist):
    nb = _execute_quick("pruning_at_init_tost.ipynb", monkeypatch,
                        {'METHOD = "snip"': 'METHOD = "lth"'})
    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                     for o in c.get("outputs", []))
    assert "lottery ticket: 2 IMP rounds" in text and "lth mask sparsity: 0.9500" in text
    assert "lth 95%: without ToST" in text


# The install cell, without a network: which pip arguments each way in gives.
@pytest.fixture
def install_ns(needs_nb):
    code = [c.source for c in _source(EXAMPLES, "quickstart_static_erk.ipynb").cells
            if c.cell_type == "code" and "%pip install" in c.source]
    assert len(code) == 1 and code[0].count(INSTALL_STEP) == 1
    helper = code[0][:code[0].index(INSTALL_STEP)]
    assert "%pip" not in helper and "%pip install -q {pip_args}" in code[0]
    assert 'REPO_URL = ""' in helper  # no URL invented: the user fills it in
    ns = {}
    exec(helper, ns)
    return ns


def _fake_checkout(path):
    (path / "keras_sparse").mkdir(parents=True)
    (path / "keras_sparse" / "__init__.py").write_text("")
    (path / "setup.py").write_text("")
    return path


def test_install_cell_prefers_repo_url(install_ns, tmp_path):
    url = "https://example.org/me/keras_sparse.git"
    args, checkout = install_ns["install_source"](url, start=EXAMPLES, upload_dir=tmp_path)
    assert shlex.split(args) == [f"keras_sparse[tflite,examples] @ git+{url}"]
    assert checkout is None
    args, _ = install_ns["install_source"]("git+ssh://git@example.org/me/ks.git@dev", start=tmp_path)
    assert shlex.split(args) == ["keras_sparse[tflite,examples] @ git+ssh://git@example.org/me/ks.git@dev"]


def test_install_cell_finds_a_checkout(install_ns, tmp_path):
    args, checkout = install_ns["install_source"]("", start=EXAMPLES, upload_dir=tmp_path)
    assert checkout == str(REPO) and shlex.split(args) == ["-e", f"{REPO}[tflite,examples]"]
    clone = _fake_checkout(tmp_path / "content" / "keras_sparse-main")  # a clone or unzipped upload
    args, checkout = install_ns["install_source"]("", start=tmp_path / "content", upload_dir=tmp_path)
    assert checkout == str(clone) and shlex.split(args) == ["-e", f"{clone}[tflite,examples]"]


def test_install_cell_uses_an_uploaded_wheel_or_zip(install_ns, tmp_path):
    content = tmp_path / "content"
    content.mkdir()
    archive = content / "keras_sparse-main.zip"
    archive.write_bytes(b"")
    args, checkout = install_ns["install_source"]("", start=content, upload_dir=content)
    assert checkout is None
    assert shlex.split(args) == [f"keras_sparse[tflite,examples] @ {archive.as_uri()}"]
    wheel = content / "keras_sparse-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"")
    args, _ = install_ns["install_source"]("", start=content, upload_dir=content)
    assert shlex.split(args) == [f"keras_sparse[tflite,examples] @ {wheel.as_uri()}"]  # wheel first


def test_install_cell_says_what_to_do_when_nothing_is_found(install_ns, tmp_path):
    with pytest.raises(RuntimeError) as e:
        install_ns["install_source"]("", start=tmp_path, upload_dir=tmp_path)
    msg = str(e.value)
    assert "not on PyPI" in msg and "REPO_URL" in msg
    assert "setup.py" in msg and str(tmp_path) in msg
    assert "keras_sparse*.whl" in msg and "keras_sparse*.zip" in msg


# The NeurRev notebook's offline fallback: quick mode (CI) takes the `except`
# branch by raising; without quick mode a failing CIFAR download takes the same
# branch. Run the data cell as plain Python with load_cifar failing.
@pytest.mark.real_data
def test_neurrev_notebook_falls_back_to_fashion_mnist_offline(monkeypatch, fashion_mnist, capsys, needs_nb):
    from keras_sparse import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_cifar", offline)
    cells = [c.source for c in _source(EXAMPLES, "neurrev_cifar_resnet32.ipynb").cells
             if c.cell_type == "code" and "datasets.load_cifar(DATASET)" in c.source]
    assert len(cells) == 1 and 'raise RuntimeError("quick mode: offline data")' in cells[0]
    ns = dict(QUICK=False, DATASET="cifar10", TRAIN_SIZE=500, TEST_SIZE=200)
    exec(cells[0], ns)
    assert ns["source"] == "fashion_mnist" and ns["NUM_CLASSES"] == 10
    assert ns["x_train"].shape == (500, 28, 28, 1) and ns["x_test"].shape == (200, 28, 28, 1)
    assert "CIFAR unavailable (ConnectionError" in capsys.readouterr().out


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
