"""The README's "Before you rent a TPU" tables, from the planner outputs that
`benchmarks/aot_plan_runs.sh OUTDIR PART ...` left in OUTDIR (one `<run>.txt` each, plus `times`).

    python benchmarks/aot_plan_table.py OUTDIR [OUTDIR ...]

Every figure is read from what `python -m sharesnet_jax.aot` printed for that run; a run that
did not finish says why (did not fit, compiler crash, stopped at the time limit). Pure Python:
no JAX needed to read the outputs.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys

GIB, MIB = 2**30, 2**20


@dataclasses.dataclass
class Run:
    """One planner run: what the script asked for and what the planner said."""

    name: str
    returncode: int
    wall_seconds: int
    libtpu: str  # the release that compiled it
    config: str
    topology: str
    flags: str
    rows: dict[str, str]  # the planner's table, by row label
    error: str = ""  # its one-line error, when it exited non-zero

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
    def outcome(self) -> str:
        """'fits', or why there is no plan."""
        if self.returncode == 0:
            return "fits"
        if self.returncode == 1 and "needs" in self.error:
            needed = re.search(r"needs ([0-9.]+ GiB)", self.error)
            return f"does not fit ({needed.group(1)} needed)" if needed else "does not fit"
        if self.returncode in (124, 137):
            return f"stopped after {self.wall_seconds} s (compiling)"
        if self.returncode in (139, -11) or "Segmentation fault" in self.error:
            return "libtpu crashed (segmentation fault)"
        return f"exit {self.returncode}: {self.error[:120]}"

    @property
    def compile_seconds(self) -> str:
        value = self.rows.get("train: lower / compile", "")
        match = re.search(r"/\s*([0-9.]+) s$", value)
        return match.group(1) if match else "-"

    @property
    def per_chip_batch(self) -> str:
        match = re.search(r"(\d+) per chip", self.rows.get("batch", ""))
        return match.group(1) if match else "-"

    @property
    def global_batch(self) -> str:
        match = re.match(r"(\d+) global", self.rows.get("batch", ""))
        return match.group(1) if match else "-"

    @property
    def hbm(self) -> str:
        total = self.rows.get("total / usable (published)", "")
        temporaries = self.rows.get("temporaries", "")
        match = re.match(r"([0-9.]+) GiB / ([0-9.]+) GiB", total)
        if not match:
            return "-"
        return f"{match.group(1)} of {match.group(2)} GiB ({temporaries.split()[0]})"

    @property
    def all_reduce(self) -> str:
        return self.rows.get("all-reduce per chip per step", "-")

    def all_reduce_bytes(self) -> float | None:
        text = self.rows.get("all-reduce per chip per step")
        if not text:
            return None
        return sum(float(mib) * MIB for mib in re.findall(r"([0-9.]+) MiB", text))

    @property
    def estimate(self) -> str:
        """The roofline's images/s per chip and the resource that bounds it. Scanned stages
        have no HBM term (XLA's cost analysis counts a scan body once), so theirs is a looser
        bound than the loop's."""
        value = self.rows.get("roofline step / images/s per chip", "")
        match = re.match(r"(\S+) ms / ([0-9,]+)", value)
        if not match:
            return "-"
        terms = {name: self.rows.get(row, "-") for name, row in (
            ("compute", "compute-bound step"), ("HBM", "HBM-bound step"),
            ("all-reduce", "all-reduce (ring)"))}
        seconds = {name: float(text.split()[0]) for name, text in terms.items() if text != "-"}
        bound = max(seconds, key=seconds.get) if seconds else "?"
        if terms["HBM"] == "-":
            bound += ", no HBM term"
        return f"<= {match.group(2)} ({bound})"


_TIMES = re.compile(r"^(\S+) rc=(-?\d+) wall=(\d+)s libtpu=(\S+) :: (\S+)\.py (\S+) ?(.*)$")


def read_runs(directory: str) -> list[Run]:
    runs = []
    with open(os.path.join(directory, "times")) as times:
        for line in times:
            match = _TIMES.match(line.strip())
            if not match:
                continue
            name, rc, wall, libtpu, config, topology, flags = match.groups()
            rows, error = {}, ""
            path = os.path.join(directory, f"{name}.txt")
            text = open(path).read() if os.path.exists(path) else ""
            for row in text.splitlines():
                if row.startswith("error: "):
                    error = row[len("error: "):]
                elif "Segmentation fault" in row:
                    error = error or "Segmentation fault"
                parts = re.split(r"\s{2,}", row.strip(), maxsplit=1)
                if len(parts) == 2 and not row.startswith(" " * 6):
                    rows.setdefault(parts[0], parts[1])
            runs.append(Run(name, int(rc), int(wall), libtpu, config, topology, flags, rows,
                            error))
    return runs


def markdown(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines)


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
    text = markdown(["model", "stage_impl", "outcome", "compile (s)", "HBM / chip (temporaries)"],
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
    body = [[r.model, *([r.topology] if with_topology else []), r.layout, r.per_chip_batch,
             r.outcome, r.compile_seconds, r.hbm, r.all_reduce, r.estimate] for r in runs]
    text = markdown(header, body)
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
    text = markdown(header, body)
    savings = sharing_savings(runs, each_topology=False)
    return text + ("\n\n" + "\n".join(savings) if savings else "")


def main(directories: list[str]) -> None:
    runs = [run for directory in directories for run in read_runs(directory)]
    pinned = runs[0].libtpu if runs else ""
    parts: dict[str, list[Run]] = {"depth": [], "pod": [], "paper": []}
    for run in runs:
        parts.setdefault(run.name.split("_", 1)[0], []).append(run)
    if parts["depth"]:
        print("### Compile time against depth (v5e:2x2)\n\n" + depth_table(parts["depth"]) + "\n")
    if parts["pod"]:
        print("### ImageNet 152-layer twins, global batch 4096 on v5e:16x16\n\n"
              + plan_table(parts["pod"], with_topology=False) + "\n")
    if parts["paper"]:
        print("### Paper configs at their batch sizes (cell: HBM per chip, compile, ESTIMATE "
              "img/s/chip)\n\n" + paper_table(parts["paper"], pinned) + "\n")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: python benchmarks/aot_plan_table.py OUTDIR [OUTDIR ...]")
    main(sys.argv[1:])
