"""The planner for TPU (`preflight`, CLI `aot`): the trainer's steps compiled for TPU slices on
this CPU machine through libtpu's topology API, with FLOPs, all-reduce bytes and the
out-of-memory path; and the trainer's own device checks (`training.device_checks`).

Needs libtpu (the `tpu` extra). Without it these tests fail at collection, loudly: a planner that
silently skipped would hide that CI no longer checks it. Compiles use XLA's least optimisation
(the CLI's --fast_compile); nothing asserted depends on it. Both libtpu 0.0.42.1 (jax 0.10.2) and
0.0.50.1 (jax 0.12) run them: what differs between releases is keyed to the behaviour.
"""

import subprocess
import sys
import textwrap

import pytest

from sharesnet_jax.errors import UserError

from sharesnet_jax.models import create_model
from sharesnet_jax.models.stats import abstract_variables, count_params
from sharesnet_jax import preflight as tpu_plan
# Not from sharesnet_jax.aot: importing the CLI sets its environment (TPU_WORKER_HOSTNAMES)
# in this test process, which every later subprocess would inherit.
from sharesnet_jax.preflight import FAST_COMPILE_OPTIONS as FAST
from sharesnet_jax.training import device_checks
from sharesnet_jax.training.recipes import cifar_recipe, imagenet_recipe
from tests.helpers import ROOT

try:
    tpu_plan.require_libtpu()
except ImportError as err:
    raise ImportError('tests/preflight/test_tpu.py needs libtpu: pip install -e ".[tpu]"') from err


def conv_macs(size: int, kernel: int, cin: int, cout: int) -> int:
    return size * size * kernel * kernel * cin * cout


def preact_resnet20_macs(s: int = 32) -> int:
    """By hand: 3x3 stem, three stages of three basic blocks (16, 32, 64), 1x1 projections."""
    macs = conv_macs(s, 3, 3, 16) + 6 * conv_macs(s, 3, 16, 16)
    for size, cin, c in ((s // 2, 16, 32), (s // 4, 32, 64)):
        macs += (conv_macs(size, 3, cin, c) + conv_macs(size, 1, cin, c)
                 + 5 * conv_macs(size, 3, c, c))
    return macs + 64 * 10


def resnet18_macs(s: int = 64) -> int:
    """By hand: 7x7/2 stem, max-pool /2, four stages of two basic blocks, 1x1 downsampling."""
    macs, size = conv_macs(s // 2, 7, 3, 64), s // 4
    macs += 4 * conv_macs(size, 3, 64, 64)
    for cin, c in ((64, 128), (128, 256), (256, 512)):
        size //= 2
        macs += (conv_macs(size, 3, cin, c) + conv_macs(size, 1, cin, c)
                 + 3 * conv_macs(size, 3, c, c))
    return macs + 512 * 1000


def num_params(model: str, num_classes: int) -> int:
    return count_params(abstract_variables(create_model(model, num_classes=num_classes))["params"])


@pytest.fixture(scope="module")
def twins():
    """cifar_resnet20 and its shared twin, float32, 16 images per chip on a v5e 2x2 slice."""
    plans = {}
    for model in ("cifar_resnet20", "cifar_sharesnet20"):
        config = cifar_recipe(model)
        config.batch_size = 64
        plans[model] = tpu_plan.plan(config, "v5e:2x2", include_eval=False,
                                     compiler_options=FAST)
    return plans


def test_flops_are_three_forward_passes(twins):
    for plan in twins.values():
        assert plan.target.num_devices == 4 and plan.train.per_device_batch == 16
        expected = 3 * 2 * preact_resnet20_macs() * 16
        assert abs(plan.train.flops - expected) <= 0.05 * expected
    assert twins["cifar_resnet20"].train.flops == twins["cifar_sharesnet20"].train.flops


def test_shared_twin_all_reduces_4_bytes_less_per_removed_parameter(twins):
    plain, shared = twins["cifar_resnet20"], twins["cifar_sharesnet20"]
    assert set(plain.all_reduce) == {"f32"} and not plain.other_collectives
    removed = num_params("cifar_resnet20", 10) - num_params("cifar_sharesnet20", 10)
    saved = plain.all_reduce_total - shared.all_reduce_total
    assert removed > 0 and abs(saved - 4 * removed) <= 0.01 * 4 * removed


def test_resnet18_on_v4_one_device_per_chip():
    """v4 lists two TensorCores per chip; the planner keeps one per chip (4 chips in 2x2x1)."""
    config = imagenet_recipe("resnet18")
    config.image_size, config.batch_size, config.eval_batch_size = 64, 32, 20
    config.bn_group_size = 8  # per-chip BatchNorm groups (the recipe's 64 exceeds the batch)
    plan = tpu_plan.plan(config, "v4:2x2x1", compiler_options=FAST)
    assert (plan.target.num_devices, plan.target.hosts, plan.train.per_device_batch) == (4, 1, 8)
    expected = 3 * 2 * resnet18_macs() * 8
    assert abs(plan.train.flops - expected) <= 0.05 * expected
    assert plan.eval.per_device_batch == 5 and plan.eval.compiled.memory.total > 0
    assert 0 < plan.train.compiled.memory.total < tpu_plan.CHIPS["v4"].usable_bytes
    table = tpu_plan.format_plan(plan)
    assert "ESTIMATE" in table and "v4:2x2x1: 4 chips, 1 host(s)" in table


@pytest.mark.parametrize("dtype, width, group, passes", [
    ("float32", 4, 0, 2), ("bfloat16", 2, 0, 2), ("float32", 4, 32, 3)])
def test_gradients_all_reduced_once_in_the_chosen_dtype_on_tpu(dtype, width, group, passes):
    """Under bfloat16 compute, every gradient crosses the chips once per parameter in the chosen
    dtype (2 or 4 B each); BatchNorm's statistics stay float32: mean and mean square over all
    chips, forward and backward (2 passes), or for groups of 32 over pairs of the 16-image chips
    forward and backward plus the running averages over all chips (3 passes). Left to the
    partitioner, the loop layout reduced a shared kernel's bfloat16 gradient once per use."""
    config = cifar_recipe("cifar_sharesnet20")
    config.batch_size, config.dtype, config.grad_reduce_dtype = 64, "bfloat16", dtype
    config.bn_group_size = group
    plan = tpu_plan.plan(config, "v5e:2x2", include_eval=False, compiler_options=FAST)
    params = num_params("cifar_sharesnet20", 10)
    # BatchNorm widths by hand: stage 1 six of 16, stages 2 and 3 one of the input width and
    # five of their own, the final one of 64; two statistics each, 4 B.
    statistics = passes * 4 * 2 * (16 * 7 + 32 * 6 + 64 * 6)
    sent = dict(plan.all_reduce)
    if dtype == "bfloat16":
        assert sent.pop("bf16") == width * params
    assert abs(sum(sent.values()) - (statistics + (width * params if dtype == "float32" else 0))
               ) <= 16, plan.all_reduce
    assert plan.gradients_reduced_once and plan.statistics_bytes == statistics
    assert sum(plan.gradient_bytes.values()) == width * params and not plan.other_collectives


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sharesnet_jax.aot", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_over_capacity_exits_1_with_one_line():
    result = cli("--config=configs/default.py", "--topology=v5e:2x2", "--fast_compile",
                 "--noeval", "--config.batch_size=262144")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr and len(lines) == 1, result.stderr
    assert lines[0].startswith("error: cifar_sharesnet20 at 65536 images per chip needs ")
    assert "v5e chip has" in lines[0] and "fits" in lines[0]


def test_bn_groups_are_checked_against_the_slice_not_this_machine():
    """BatchNorm groups form within a chip or over consecutive chips: the recipe's 64 neither
    divides nor spans the 48 images a v5e-8 chip holds at batch 384. On this 1-device machine
    the trainer's own check passes; the planner must check against the slice's 8 chips."""
    result = cli("--config=configs/imagenet_sharesnet50.py", "--topology=v5e:2x4", "--noeval",
                 "--config.batch_size=384")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert lines[0] == ("error: bn_group_size=64 must divide the per-device batch (48) or span "
                        "a whole number of devices that divides the 8 (groups are formed on "
                        "consecutive devices)")


def test_unknown_topology_is_one_line():
    result = cli("--config=configs/default.py", "--topology=v9x:2x2")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and "Traceback" not in result.stderr
    assert "v4, v5e, v5p, v6e" in lines[0] and "--topology=v5e:2x4" in lines[0]


def test_json_through_a_link_is_refused_before_compiling(tmp_path):
    """A --json path that is a planted link is one line, before the (minutes-long) compile, and
    the link's target is left as it was."""
    target = tmp_path / "someone_elses.txt"
    target.write_text("keep me\n")
    (tmp_path / "plan.json").symlink_to(target)
    result = cli("--config=configs/default.py", "--topology=v5e:2x2",
                 f"--json={tmp_path / 'plan.json'}")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and "Traceback" not in result.stderr, \
        result.stderr[-2000:]
    assert "plan.json is a symbolic link" in lines[0] and target.read_text() == "keep me\n"
    assert result.stdout == ""  # refused before planning: no table was printed
    missing = cli("--config=configs/default.py", "--topology=v5e:2x2",
                  f"--json={tmp_path / 'absent' / 'plan.json'}")
    assert missing.returncode == 2 and "the directory" in missing.stderr.strip().splitlines()[-1]


def test_parse_out_of_memory():
    assert tpu_plan.parse_out_of_memory(
        "RESOURCE_EXHAUSTED: Ran out of memory on HBM ... (23.97G) exceeds available HBM "
        "(15.75G)") == (int(23.97 * 2**30), int(15.75 * 2**30))
    assert tpu_plan.parse_out_of_memory("Used 20.5G of 15.75G hbm.")[0] == int(20.5 * 2**30)
    assert tpu_plan.parse_out_of_memory("something else") == (None, None)


def test_all_reduce_bytes_counts_tuple_operands():
    hlo = textwrap.dedent("""\
        %all-reduce.1 = (f32[3,3,16,16]{3,2,1,0}, bf16[10]{0}) all-reduce(%a, %b), to_apply=%add
        %ars = f32[64]{0:T(128)} all-reduce-start(f32[64]{0} %c), to_apply=%add
        %ard = f32[64]{0} all-reduce-done(f32[64]{0} %ars)
        %x = f32[8]{0} add(%y, %z)""")
    assert tpu_plan.all_reduce_bytes(hlo) == {"f32": 4 * (2304 + 64), "bf16": 20}


def test_all_reduce_in_a_while_loop_counts_once_per_iteration():
    """Scanned stages all-reduce inside a while loop: bytes x the trip count of its condition."""
    hlo = textwrap.dedent("""\
        %body (p: (s32[], f32[16])) -> (s32[], f32[16]) {
          %ar = f32[16]{0} all-reduce(f32[16]{0} %g), to_apply=%add
        }

        %cond (p: (s32[], f32[16])) -> pred[] {
          %n = s32[] constant(5)
          ROOT %lt = pred[] compare(s32[] %i, s32[] %n), direction=LT
        }

        ENTRY %main (x: f32[16]) -> f32[16] {
          %w = (s32[], f32[16]) while((s32[], f32[16]) %t), condition=%cond, body=%body
          %ar2 = bf16[8]{0} all-reduce(bf16[8]{0} %h), to_apply=%add
        }
        """)
    assert tpu_plan.all_reduce_bytes(hlo) == {"f32": 5 * 64, "bf16": 16}


class _Device:
    device_kind, id = "TPU v5 lite", 0

    def __init__(self, limit):
        self._limit = limit

    def memory_stats(self):
        return None if self._limit is None else {"bytes_limit": self._limit}


class _Compiled:
    def memory_analysis(self):
        return type("Stats", (), dict(
            argument_size_in_bytes=100, output_size_in_bytes=100, alias_size_in_bytes=100,
            temp_size_in_bytes=800, generated_code_size_in_bytes=24))()


def test_check_fits_device():
    device_checks.check_fits_device(_Compiled(), _Device(2**20))
    device_checks.check_fits_device(_Compiled(), _Device(None))  # CPU: no limit, no check
    with pytest.raises(UserError, match="needs .* per device but TPU v5 lite 0 has"):
        device_checks.check_fits_device(_Compiled(), _Device(900))  # needs 924


class _Accelerator:
    """What the trainer reads of a GPU: its platform and memory limit (here tiny)."""

    platform, device_kind, id = "gpu", "Fake GPU", 0

    def memory_stats(self):
        return {"bytes_limit": 1024}


def test_trainer_refuses_a_step_that_exceeds_device_memory_before_running_it(monkeypatch,
                                                                             tmp_path):
    from sharesnet_jax import train
    from tests.helpers import tiny_config

    monkeypatch.setattr("jax.local_devices", lambda *a, **k: [_Accelerator()])
    config = tiny_config(dataset="synthetic", model="cifar_sharesnet8", image_size=8,
                         num_classes=10, batch_size=4, eval_batch_size=4)
    with pytest.raises(UserError, match=r"the train step needs .* per device but Fake GPU 0 "
                                        r"has 0\.00 GiB: lower --config.batch_size"):
        train.train_and_evaluate(config, str(tmp_path))
    assert not (tmp_path / "checkpoints").exists() or not any((tmp_path / "checkpoints").iterdir())


# ---------------------------------------------------------------------------------------------
# libtpu releases known to crash on a layout: refused in one line, never a segfault.


def test_known_compiler_crash_is_refused_for_that_release_and_generation_only():
    refuse = tpu_plan.refuse_known_compiler_crash
    for version in ("0.0.42", "0.0.42.1"):
        with pytest.raises(tpu_plan.PlanError, match=rf"libtpu {version} crashes .* for v6e: use "
                                                     r"a newer jax"):
            refuse("v6e", version)
    for args in (("v5e", "0.0.42.1"), ("v5p", "0.0.42.1"), ("v6e", "0.0.50.1"),
                 ("v6e", "0.0.420")):
        refuse(*args)


def test_v6e_is_one_line_under_a_crashing_libtpu_and_a_plan_under_a_good_one():
    """libtpu 0.0.42.1 (jax 0.10.2's) dies with SIGSEGV compiling our steps for v6e (the
    default config's scanned gradient on a v6e:2x2 here): the planner says so before compiling
    (without the guard this exits -11). libtpu 0.0.50.1 (jax 0.12's) compiles the same step."""
    result = cli("--config=configs/default.py", "--topology=v6e:2x2", "--noeval",
                 "--config.stage_impl=scan", "--fast_compile")
    lines = result.stderr.strip().splitlines()
    if device_checks.known_compiler_crash("v6e"):
        assert result.returncode == 2, result.stderr[-2000:]
        assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
        assert "crashes (segmentation fault)" in lines[0] and "newer jax" in lines[0]
    else:
        assert result.returncode == 0, result.stderr[-2000:]
        assert "v6e:2x2: 4 chips, 1 host(s)" in result.stdout


class _V6e:
    platform, device_kind, id = "tpu", "TPU v6 lite", 0


def test_trainer_warns_of_a_known_compiler_crash_before_compiling(monkeypatch, tmp_path,
                                                                   caplog):
    """On a (here fake) v6e with the pinned libtpu the trainer says why a segfault may follow,
    then goes on: the crash was seen compiling ahead of time, not on a chip."""
    import logging

    from sharesnet_jax import train
    from tests.helpers import tiny_config

    assert device_checks.generation_of(_V6e()) == "v6e"
    monkeypatch.setattr("jax.local_devices", lambda *a, **k: [_V6e()])
    # The installed libtpu may be one that compiles for v6e: the warning is for the one that
    # does not.
    monkeypatch.setattr(device_checks, "libtpu_version", lambda: "0.0.42.1")
    caplog.set_level(logging.WARNING)
    config = tiny_config(dataset="synthetic", model="cifar_sharesnet8", image_size=8,
                         num_classes=10, batch_size=4, eval_batch_size=4, num_train_steps=2)
    assert train.train_and_evaluate(config, str(tmp_path))["step"] == 2
    warnings = [r.getMessage() for r in caplog.records if "segmentation fault" in r.getMessage()]
    assert len(warnings) == 1 and "for v6e: use a newer jax" in warnings[0], caplog.text


# ---------------------------------------------------------------------------------------------
# benchmarks/aot_plan_table.py reads the planner's JSON records (never its printed table).


def test_table_script_reads_the_planners_own_records(twins, tmp_path):
    import json

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import aot_plan_table

    times = []
    for model, plan in twins.items():
        name = f"pod_{model}"
        # Through JSON text, as the CLI writes it.
        (tmp_path / f"{name}.json").write_text(json.dumps(tpu_plan.plan_record(plan)))
        times.append(f"{name} rc=0 wall=9s libtpu=0.0.42.1 :: cifar10_x.py v5e:2x2 "
                     f"--config.model={model}")
    (tmp_path / "pod_oom.json").write_text(json.dumps(
        {"fits": False, "needed_bytes": 20 * 2**30, "per_device_batch": 16,
         "suggested_per_device_batch": 8, "global_batch": 64}))
    (tmp_path / "pod_oom.txt").write_text("error: cifar_resnet20 at 16 images per chip needs "
                                          "20.00 GiB per chip; ...\n")
    times.append("pod_oom rc=1 wall=5s libtpu=0.0.42.1 :: cifar10_x.py v5e:2x2 "
                 "--config.model=cifar_resnet20 --config.stage_impl=scan")
    times.append("pod_slow rc=124 wall=900s libtpu=0.0.42.1 :: cifar10_x.py v5e:2x2 "
                 "--config.model=cifar_resnet20 --config.stage_impl=loop --config.remat=True "
                 "--config.grad_reduce_dtype=bfloat16")
    (tmp_path / "times").write_text("\n".join(times) + "\n")
    runs = {r.name: r for r in aot_plan_table.read_runs(str(tmp_path))}

    plain, shared = twins["cifar_resnet20"], twins["cifar_sharesnet20"]
    row = runs["pod_cifar_resnet20"]
    assert row.outcome == "fits" and row.per_device_batch == "16" and row.global_batch == "64"
    terms = {"compute": plain.estimate.compute_seconds, "HBM": plain.estimate.hbm_seconds or 0,
             "all-reduce": plain.estimate.all_reduce_seconds}
    bound = max(terms, key=terms.get) + ("" if plain.estimate.hbm_seconds else ", no HBM term")
    per_second = plain.train.per_device_batch / plain.estimate.step_seconds
    assert row.estimate == f"<= {per_second:,.0f} ({bound})"
    assert row.compile_seconds == f"{plain.train.compiled.compile_seconds:.1f}"
    assert row.hbm.startswith(f"{plain.train.compiled.memory.total / 2**30:.2f} of 15.75 GiB")
    assert row.largest_batch == str(plain.largest_batch)
    saved_mib = (plain.all_reduce_total - shared.all_reduce_total) / 2**20
    savings = aot_plan_table.sharing_savings(list(runs.values()))
    assert len(savings) == 1 and savings[0].startswith("- cifar_sharesnet20 vs cifar_resnet20")
    assert abs(float(savings[0].split("all-reduces ")[1].split(" MiB")[0]) - saved_mib) <= 0.15
    assert runs["pod_oom"].outcome == "does not fit (20.00 GiB needed)"
    assert runs["pod_oom"].largest_batch == "8"
    assert runs["pod_slow"].outcome == "stopped after 900 s (compiling)"
    assert runs["pod_slow"].layout == "loop + remat full, bf16 all-reduce"
    table = aot_plan_table.paper_table(list(runs.values()), "0.0.42.1")
    cells = [[cell.strip() for cell in line.strip("|").split("|")]
             for line in table.splitlines() if line.startswith("|")]
    assert cells[0][2:] == ["v5e:2x2 scan", "v5e:2x2 loop + remat full, bf16 all-reduce",
                            "v5e:2x2 loop"]
    assert ["cifar_resnet20", "64", "does not fit (20.00 GiB needed)",
            "stopped after 900 s (compiling)",
            f"{row.hbm.split(' of ')[0]} GiB, {row.compile_seconds} s, "
            f"{row.estimate.split(' (')[0]}"] in cells
