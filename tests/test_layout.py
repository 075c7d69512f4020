"""The package's layers and their boundaries, as the README's "Layout" states them.

models/ (JAX/Flax only) <- data/ (the only TensorFlow/TFDS code) <- interop/ (the only torch code)
<- training/ <- preflight/ (the planner: training never imports it) <- the command-line modules
on top. Checked two ways: statically (every import
statement, function-local ones included) and by importing the JAX-only layers with TensorFlow,
TFDS, clu and torch made unimportable.
"""

import ast
import re
import subprocess
import sys

import pytest

from tests.helpers import ROOT

PACKAGE = ROOT / "sharesnet_jax"
MODULES = sorted(PACKAGE.rglob("*.py"))
# Each may import only those before it.
LAYER_ORDER = ("models", "data", "interop", "training", "preflight")
TENSORFLOW = {"tensorflow", "tensorflow_datasets"}


def _layer(path) -> str:
    relative = path.relative_to(PACKAGE)
    return relative.parts[0] if len(relative.parts) > 1 else "cli"


def _imports(path) -> set[str]:
    """Every module an import statement of `path` names (absolute names)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_respect_the_layers(path):
    layer, imports = _layer(path), _imports(path)
    roots = {name.split(".")[0] for name in imports}
    if layer != "data":
        assert not roots & TENSORFLOW, f"only data/ imports TensorFlow/TFDS: {roots & TENSORFLOW}"
    if layer != "interop":
        assert "torch" not in roots and "torchvision" not in roots, "only interop/ imports torch"
    if layer in LAYER_ORDER:
        allowed = LAYER_ORDER[:LAYER_ORDER.index(layer) + 1]
        for name in imports:
            match = re.match(r"sharesnet_jax\.(\w+)", name)
            if match and match.group(1) in LAYER_ORDER:
                assert match.group(1) in allowed, f"{layer}/ imports {name}"
    assert not any(name.startswith("jax._src") for name in imports), "private JAX module"


DATA_MODULES = [path for path in MODULES if _layer(path) == "data"]
CONFIG_NAMES = {"config", "cfg"}  # what callers name a training ConfigDict


def _reads_of_a_config(path) -> list[str]:
    """Where `path` takes or reads a training config: a parameter named like one, an attribute
    of a name like one (`config.seed`), or an import of the schema (training/, ml_collections)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            arguments = node.args
            for argument in (*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs,
                             arguments.vararg, arguments.kwarg):
                if argument is not None and argument.arg in CONFIG_NAMES:
                    found.append(f"line {node.lineno}: parameter {argument.arg!r}")
        elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
              and node.value.id in CONFIG_NAMES):
            found.append(f"line {node.lineno}: {node.value.id}.{node.attr}")
    for name in _imports(path):
        if name.startswith(("sharesnet_jax.training", "ml_collections")):
            found.append(f"imports {name}")
    return found


@pytest.mark.parametrize("path", DATA_MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_the_data_layer_never_reads_the_training_config(path):
    """data/ takes an opened dataset and plain values (issue 24), so its dependence on the
    schema is visible in its signatures instead of hidden in `config.FIELD` reads."""
    assert not _reads_of_a_config(path), _reads_of_a_config(path)


def test_preflight_builds_on_training_and_training_never_imports_it():
    """The planner compiles the trainer's own steps (so it must import training); the trainer's
    device checks live in training (so training needs nothing of the planner)."""
    by_layer: dict[str, set[str]] = {}
    for path in MODULES:
        by_layer.setdefault(_layer(path), set()).update(_imports(path))
    assert any(name.startswith("sharesnet_jax.training") for name in by_layer["preflight"])
    for layer in ("models", "data", "interop", "training"):
        assert not any(name.startswith("sharesnet_jax.preflight") for name in by_layer[layer]), layer


def test_jax_only_layers_import_without_tensorflow_tfds_clu_or_torch():
    modules = [".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
               for p in MODULES if _layer(p) in ("models", "training", "preflight")]
    modules += ["sharesnet_jax.data.info", "sharesnet_jax.data.synthetic"]
    code = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('tensorflow', 'tensorflow_datasets', 'clu', 'torch'):
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
import importlib
for module in {modules!r}:
    importlib.import_module(module)
import jax, jax.numpy as jnp
from sharesnet_jax.models import create_model
model = create_model('cifar_sharesnet20', num_classes=10)
x = jnp.zeros((1, 32, 32, 3))
print(model.apply(model.init(jax.random.key(0), x, train=False), x, train=False).shape)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=180, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "(1, 10)" in result.stdout


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_stay_small_and_read_config_fields_without_their_own_defaults(path):
    text = path.read_text()
    assert len(text.splitlines()) <= 400
    # A default belongs to the schema (training/config.py) alone.
    assert not re.search(r"config\.get\(", text), "config.get( outside the schema"


def test_main_is_thin():
    assert len((PACKAGE / "main.py").read_text().splitlines()) < 90


def test_each_enumeration_is_defined_once():
    definitions = {}
    for path in MODULES:
        for match in re.finditer(r"^([A-Z_]+) = [({]", path.read_text(), re.M):
            definitions.setdefault(match.group(1), []).append(path.name)
    for name in ("SHARE_MODES", "STAGE_IMPLS", "AUGMENT_STYLES", "AUGMENT_CHOICES",
                 "OPTIMIZERS", "SCHEDULES", "DTYPES"):
        assert len(definitions.get(name, [])) == 1, (name, definitions.get(name))
