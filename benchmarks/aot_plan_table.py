"""The planner tables of docs/planner.md (the README's "Before you rent" summarises them), from
the plans that `benchmarks/aot_plan_runs.sh OUTDIR PART ...` left in OUTDIR (one `<run>.json`
each, written by `python -m sharesnet_jax.aot --json`, plus `times`).

    python benchmarks/aot_plan_table.py OUTDIR [OUTDIR ...]

Every figure is read from the planner's JSON record of that run, never from its printed table;
a run without a record says why (compiler crash, stopped at the time limit). Pure Python: no JAX
needed to read the records.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from sharesnet_jax.tables import markdown_table  # noqa: E402  (tables and units import nothing)
from sharesnet_jax.units import GIB, MIB  # noqa: E402


@dataclasses.dataclass
class Run:
    """One planner run: what the script asked for and the planner's record of it."""

    name: str
    returncode: int
    wall_seconds: int
    libtpu: str  # the release that compiled it
    config: str
    topology: str
    flags: str
    record: dict  # the planner's JSON (a plan, or a does-not-fit verdict); {} when none
    error: str = ""  # the last line it printed, when it exited non-zero

    def flag(self, field: str, default: str = "") -> str:
        match = re.search(rf"--config\.{field}=(\S+)", self.flags)
        return match.group(1) if match else default

    @property
    def model(self) -> str:
        return self.flag("model") or self.config.split("_", 1)[1]

    @property
    def layout(self) -> str:
        """stage_impl, the remat policy (the older `remat=True` is 'full') and a bfloat16
        gradient all-reduce (float32 is the default)."""
        layout = self.flag("stage_impl", "loop")
        policy = self.flag("remat_policy") or ("full" if self.flag("remat") == "True" else "none")
        if policy != "none":
            layout += f" + remat {policy}"
        if self.flag("grad_reduce_dtype") == "bfloat16":
            layout += ", bf16 all-reduce"
        return layout

    @property
    def fits(self) -> bool:
        return self.returncode == 0 and self.record.get("fits") is True

    @property
    def outcome(self) -> str:
        """'fits', or why there is no plan."""
        if self.fits:
            return "fits"
        if self.returncode == 1 and self.record.get("fits") is False:
            needed = self.record.get("needed_bytes")
            return f"does not fit ({needed / GIB:.2f} GiB needed)" if needed else "does not fit"
        if self.returncode in (124, 137):
            return f"stopped after {self.wall_seconds} s (compiling)"
        if self.returncode in (139, -11) or "Segmentation fault" in self.error:
            return "libtpu crashed (segmentation fault)"
        return f"exit {self.returncode}: {self.error[:120]}"

    def _train(self, key: str):
        return self.record.get("train", {}).get(key) if self.fits else None

    @property
    def compile_seconds(self) -> str:
        seconds = self._train("compile_seconds")
        return "-" if seconds is None else f"{seconds:.1f}"

    @property
    def per_device_batch(self) -> str:
        batch = self._train("per_device_batch") or self.record.get("per_device_batch")
        return "-" if batch is None else str(batch)

    @property
    def global_batch(self) -> str:
        batch = self.record.get("global_batch")
        return "-" if batch is None else str(batch)

    @property
    def hbm(self) -> str:
        memory = self._train("memory_bytes")
        if not memory:
            return "-"
        usable = self.record["target"]["usable_bytes"]
        return (f"{memory['total'] / GIB:.2f} of {usable / GIB:.2f} GiB "
                f"({memory['temporaries'] / GIB:.2f})")

    @property
    def all_reduce(self) -> str:
        sent = self.record.get("all_reduce_bytes") if self.fits else None
        if sent is None:
            return "-"
        return ", ".join(f"{b / MIB:.1f} MiB {d}" for d, b in sorted(sent.items())) or "none"

    def all_reduce_bytes(self) -> float | None:
        sent = self.record.get("all_reduce_bytes") if self.fits else None
        return None if sent is None else float(sum(sent.values()))

    @property
    def largest_batch(self) -> str:
        if self.fits:
            batch = self.record.get("largest_per_device_batch_estimate")
        else:
            batch = self.record.get("suggested_per_device_batch")
        return "-" if batch is None else str(batch)

    @property
    def estimate(self) -> str:
        """The roofline's images/s per device and the resource that bounds it. Scanned stages
        have no HBM term (XLA's cost analysis counts a scan body once; CUDA reports none), so
        theirs is a looser bound."""
        estimate = self.record.get("estimate") if self.fits else None
        if not estimate:
            return "-"
        bound = estimate["bound_by"] + ("" if estimate["hbm_seconds"] else ", no HBM term")
        return f"<= {estimate['images_per_second_per_device']:,.0f} ({bound})"


_TIMES = re.compile(r"^(\S+) rc=(-?\d+) wall=(\d+)s libtpu=(\S+) :: (\S+)\.py (\S+) ?(.*)$")


def read_runs(directory: str) -> list[Run]:
    runs = []
    with open(os.path.join(directory, "times")) as times:
        for line in times:
            match = _TIMES.match(line.strip())
            if not match:
                continue
            name, rc, wall, libtpu, config, topology, flags = match.groups()
            record_path = os.path.join(directory, f"{name}.json")
            record = json.load(open(record_path)) if os.path.exists(record_path) else {}
            text_path = os.path.join(directory, f"{name}.txt")
            text = open(text_path).read() if os.path.exists(text_path) else ""
            error = ""
            for row in text.splitlines():
                if row.startswith("error: "):
                    error = row[len("error: "):]
                elif "Segmentation fault" in row:
                    error = error or "Segmentation fault"
            runs.append(Run(name, int(rc), int(wall), libtpu, config, topology, flags, record,
                            error))
    return runs


def twin_of(model: str) -> str | None:
    """The unshared twin of a shared model name (sharesnet152 -> resnet152)."""
    for shared, plain in (("sharesnet", "resnet"), ("sharewrn", "wrn")):
        if shared in model:
            return model.replace(shared, plain)
    return None


def sharing_savings(runs: list[Run], *, each_topology: bool = True) -> list[str]:
    """All-reduce bytes the shared twin saves, per pair planned alike (or only the first
    topology of each layout: the saving depends on the layout, not the chip)."""
    by_key = {(r.model, r.topology, r.layout, r.flag("dtype")): r for r in runs}
    lines, seen = [], set()
    for (model, topology, layout, dtype), run in by_key.items():
        if not each_topology and (model, layout, dtype) in seen:
            continue
        plain = by_key.get((twin_of(model) or "", topology, layout, dtype))
        shared_bytes = run.all_reduce_bytes()
        plain_bytes = plain.all_reduce_bytes() if plain else None
        if shared_bytes is None or plain_bytes is None:
            continue
        saved = plain_bytes - shared_bytes
        seen.add((model, layout, dtype))
        lines.append(f"- {model} vs {plain.model} ({topology}, {layout}): all-reduces "
                     f"{saved / MIB:.1f} MiB less per chip per step "
                     f"({100 * saved / plain_bytes:.0f}% of {plain_bytes / MIB:.1f} MiB)")
    return lines


def depth_table(runs: list[Run]) -> str:
    body = [[r.model, r.layout, r.outcome, r.compile_seconds, r.hbm] for r in runs]
    text = markdown_table(["model", "stage_impl", "outcome", "compile (s)", "HBM / chip (temporaries)"],
                    body)
    seconds = {(r.model, r.layout): float(r.compile_seconds) for r in runs
               if r.compile_seconds != "-"}
    deep, shallow = "cifar_sharesnet1001", "cifar_sharesnet164"
    if (deep, "scan") in seconds and (shallow, "scan") in seconds:
        text += (f"\n\nscanned 1001 / scanned 164 compile: "
                 f"{seconds[deep, 'scan'] / seconds[shallow, 'scan']:.2f}x")
    if (deep, "scan") in seconds:
        unrolled = seconds.get((deep, "loop"))
        stopped = [r for r in runs if (r.model, r.layout) == (deep, "loop") and r.returncode == 124]
        if unrolled:
            text += f"; unrolled 1001 / scanned 1001: {unrolled / seconds[deep, 'scan']:.1f}x"
        elif stopped:
            text += (f"; unrolled 1001 stopped after {stopped[0].wall_seconds} s: at least "
                     f"{stopped[0].wall_seconds / seconds[deep, 'scan']:.1f}x the scanned one")
    return text


LAYOUT_ORDER = ("scan + remat full", "scan + remat conv_outputs", "scan", "loop + remat full",
                "loop + remat conv_outputs", "loop")


def plan_table(runs: list[Run], *, with_topology: bool) -> str:
    header = ["model", *(["topology"] if with_topology else []), "stage_impl", "per chip",
              "outcome", "compile (s)", "HBM / chip (temporaries)", "all-reduce / chip / step",
              "ESTIMATE img/s/chip (bound by)"]
    models = list(dict.fromkeys(r.model for r in runs))
    runs = sorted(runs, key=lambda r: (models.index(r.model), r.topology, r.flag(
        "grad_reduce_dtype"), LAYOUT_ORDER.index(r.layout.split(",")[0])))
    body = [[r.model, *([r.topology] if with_topology else []), r.layout, r.per_device_batch,
             r.outcome, r.compile_seconds, r.hbm, r.all_reduce, r.estimate] for r in runs]
    text = markdown_table(header, body)
    savings = sharing_savings(runs)
    return text + ("\n\n" + "\n".join(savings) if savings else "")


def paper_table(runs: list[Run], pinned_libtpu: str) -> str:
    """One row per config, one column per (topology, layout, libtpu): each cell is HBM per
    chip, compile seconds and the estimate, or why there is no plan."""
    columns: list[tuple[str, str, str]] = []
    for r in runs:
        key = (r.topology, r.layout, r.libtpu)
        if key not in columns:
            columns.append(key)
    columns.sort(key=lambda c: (c[0], c[2] != pinned_libtpu,
                                LAYOUT_ORDER.index(c[1].split(",")[0]), c[1]))
    models = list(dict.fromkeys(r.model for r in runs))
    cells = {(r.model, (r.topology, r.layout, r.libtpu)): r for r in runs}

    def cell(run: Run | None) -> str:
        if run is None:
            return ""
        if run.outcome != "fits":
            return run.outcome.replace(" (segmentation fault)", "")
        return (f"{run.hbm.split(' of ')[0]} GiB, {run.compile_seconds} s, "
                f"{run.estimate.split(' (')[0]}")

    header = ["model", "global batch"] + [
        f"{topology} {layout}" + ("" if libtpu == pinned_libtpu else f" (libtpu {libtpu})")
        for topology, layout, libtpu in columns]
    body = []
    for model in models:
        batches = "/".join(dict.fromkeys(
            cells[model, c].global_batch for c in columns
            if (model, c) in cells and cells[model, c].global_batch != "-"))
        body.append([model, batches] + [cell(cells.get((model, c))) for c in columns])
    text = markdown_table(header, body)
    savings = sharing_savings(runs, each_topology=False)
    return text + ("\n\n" + "\n".join(savings) if savings else "")


def gpu_table(runs: list[Run]) -> str:
    """One row per (config, GPUs): fits or not, memory per GPU against the usable part, compile
    seconds, all-reduce bytes per step, the largest power-of-two batch per GPU (an estimate,
    linear in the batch from this compile) and the roofline bound."""
    header = ["model", "GPUs", "global batch (per GPU)", "outcome", "GiB per GPU (temporaries)",
              "compile (s)", "all-reduce / GPU / step", "largest batch per GPU (estimate)",
              "ESTIMATE img/s/GPU (bound by)"]
    body = [[r.model, r.topology, f"{r.global_batch} ({r.per_device_batch})", r.outcome, r.hbm,
             r.compile_seconds, r.all_reduce, r.largest_batch, r.estimate] for r in runs]
    return markdown_table(header, body)


def main(directories: list[str]) -> None:
    runs = [run for directory in directories for run in read_runs(directory)]
    pinned = runs[0].libtpu if runs else ""
    parts: dict[str, list[Run]] = {"depth": [], "pod": [], "paper": [], "gpu": []}
    for run in runs:
        parts.setdefault(run.name.split("_", 1)[0], []).append(run)
    if parts["depth"]:
        print("### Compile time against depth (v5e:2x2)\n\n" + depth_table(parts["depth"]) + "\n")
    if parts["pod"]:
        print("### ImageNet 152-layer twins, global batch 4096 on v5e:16x16\n\n"
              + plan_table(parts["pod"], with_topology=False) + "\n")
    if parts["gpu"]:
        print("### Paper configs on GPUs (compiled for the GPU on a CPU machine)\n\n"
              + gpu_table(parts["gpu"]) + "\n")
    if parts["paper"]:
        print("### Paper configs at their batch sizes (cell: HBM per chip, compile, ESTIMATE "
              "img/s/chip)\n\n" + paper_table(parts["paper"], pinned) + "\n")


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        sys.exit("usage: python benchmarks/aot_plan_table.py OUTDIR [OUTDIR ...]")
    main(sys.argv[1:])
