"""The Colab notebooks run top to bottom (smoke size, offline) and are committed without outputs."""

import json
import pathlib
import sys

import nbclient
import nbformat
import pytest
from jupyter_client.manager import KernelManager

from sharesnet_jax.models import create_model
from sharesnet_jax.models.stats import abstract_variables, count_params

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = ["quickstart.ipynb", "sharing_explained.ipynb"]


def _read(name):
    return nbformat.read(ROOT / "colab" / name, as_version=4)


def _execute(name, tmp_path, monkeypatch):
    """Runs the notebook in `tmp_path` on the python3 kernel of this interpreter, in smoke mode,
    with a private TFDS folder; raises CellExecutionError on the first failing cell."""
    monkeypatch.setenv("SHARESNET_NOTEBOOK_SMOKE", "1")
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    notebook = _read(name)
    nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    return notebook


def _outputs(notebook):
    """All text the code cells printed, and the number of images they showed."""
    texts, images = [], 0
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            assert output["output_type"] != "error", output
            if output["output_type"] == "stream":
                texts.append(output["text"])
            elif "data" in output:
                texts.append(output["data"].get("text/plain", ""))
                images += "image/png" in output["data"]
    return "\n".join(texts), images


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_notebooks_have_no_outputs(name):
    notebook = _read(name)
    nbformat.validate(notebook)
    assert notebook.metadata["kernelspec"]["name"] == "python3"
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, cell.source[:80]
        assert "execution" not in cell.get("metadata", {}), "strip nbclient's timing metadata"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebooks_are_self_contained(name):
    """Colab opens a notebook alone: the first code cell installs the package, and no cell imports
    from the repository's tests or colab folders."""
    cells = [cell for cell in _read(name).cells if cell.cell_type == "code"]
    assert 'REPO_URL = "https://github.com/' in cells[0].source
    assert "pip" in cells[0].source and "find_spec(\"sharesnet_jax\")" in cells[0].source
    for cell in cells:
        assert "from tests" not in cell.source and "import tests" not in cell.source
        assert "from colab" not in cell.source


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_install_cell_finds_the_checkout_it_runs_in(name, monkeypatch, capsys, tmp_path):
    """Inside a clone (cwd colab/ or the root) the install cell would install that clone; here
    the package is importable already, so it installs nothing."""
    install = next(cell for cell in _read(name).cells if cell.cell_type == "code").source
    namespace = {}
    monkeypatch.chdir(ROOT / "colab")
    exec(compile(install, f"{name}:install", "exec"), namespace)
    assert "already installed: nothing to do" in capsys.readouterr().out
    assert namespace["local_checkout"]() == ROOT
    monkeypatch.chdir(ROOT)
    assert namespace["local_checkout"]() == ROOT
    monkeypatch.chdir(tmp_path)
    assert namespace["local_checkout"]() is None


def test_python3_kernel_is_this_interpreter():
    """nbclient's python3 kernel must run the interpreter (and so the packages) of the tests."""
    command = KernelManager(kernel_name="python3").format_kernel_cmd()
    assert command[0] == sys.executable


def _param_count(name):
    return count_params(abstract_variables(create_model(name, num_classes=10))["params"])


def test_quickstart_runs_offline_in_smoke_mode(tmp_path, monkeypatch):
    text, images = _outputs(_execute("quickstart.ipynb", tmp_path, monkeypatch))
    assert "sharesnet_jax is already installed" in text
    assert "Runtime: CPU" in text and "jax.devices():" in text
    # No CIFAR-10 in the private TFDS folder and no download in smoke mode: the fallback, said.
    assert "CIFAR-10 is not available here" in text
    assert "Falling back to the embedded offline dataset 'digits'" in text
    # The ShaResNet and its unshared twin, side by side, with their true parameter counts.
    for name in ("cifar_resnet20", "cifar_sharesnet20", "cifar_resnet164", "cifar_sharesnet164"):
        assert name in text and f"{_param_count(name):,}" in text, name
    assert "Test accuracy" in text and "Checkpoint of step 12" in text
    assert images == 2  # the training curves and the predictions
    results = json.loads(
        (tmp_path / "sharesnet_runs" / "digits_cifar_sharesnet20_smoke" / "results.json").read_text())
    assert results["step"] == 12 and results["num_params"] == _param_count("cifar_sharesnet20")


def test_sharing_explained_runs_in_smoke_mode(tmp_path, monkeypatch):
    text, images = _outputs(_execute("sharing_explained.ipynb", tmp_path, monkeypatch))
    assert "shared_conv3x3/  (147,456 parameters)" in text
    assert "all counts match the paper" in text
    assert "929,114" in text and "36,821,032" in text
    assert "the shared kernel's gradient equals the sum of the gradients of its uses" in text
    assert images == 1  # parameters against depth


def test_smoke_switch_is_read_from_the_environment():
    for name in NOTEBOOKS:
        sources = "\n".join(cell.source for cell in _read(name).cells)
        assert 'os.environ.get("SHARESNET_NOTEBOOK_SMOKE"' in sources, name
