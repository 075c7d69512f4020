"""The planner's table: one row per fact, the estimate labelled as such."""

from __future__ import annotations

from sharesnet_jax.training.tpu.chips import gib
from sharesnet_jax.training.tpu.plan import Plan


def _mib(nbytes: float) -> str:
    return f"{nbytes / 2**20:.1f} MiB"


def _tflops(flops: float | None) -> str:
    return "-" if flops is None else f"{flops / 1e12:.4g} TFLOP"


def _ms(seconds: float) -> str:
    return f"{1e3 * seconds:.3g} ms"


def format_plan(p: Plan) -> str:
    """One two-column table; the estimate rows say they are estimates."""
    chip, t, m = p.tpu.chip, p.train, p.train.compiled.memory
    rows: list[tuple[str, str]] = [
        ("config", p.config_summary),
        ("topology", f"{p.tpu.name}: {p.tpu.chips} chips, {p.tpu.hosts} host(s)"),
        ("batch", f"{p.global_batch} global, {t.per_chip_batch} per chip"),
        ("train: lower / compile", f"{t.compiled.lower_seconds:.1f} s / "
                                   f"{t.compiled.compile_seconds:.1f} s"),
        ("train HBM per chip: arguments", gib(m.arguments)),
        ("  temporaries", gib(m.temporaries)),
        ("  generated code", gib(m.generated_code)),
        ("  outputs not aliased to arguments", gib(m.outputs - m.aliased)),
        ("  total / usable (published)", f"{gib(m.total)} / {gib(chip.hbm_usable)} "
                                         f"({gib(chip.hbm_bytes)}): "
                                         f"{100 * m.total / chip.hbm_usable:.0f}%"),
        ("train FLOPs per chip per step", f"{_tflops(t.flops)} (ours: 2 x MACs x batch x "
                                          f"{p.forward_passes} passes)"),
        ("  recomputed by remat", f"{_tflops(t.flops * (p.forward_passes - 3) / p.forward_passes)}"
                                  " (convolutions; elementwise recomputation not counted)"),
        ("  XLA cost analysis", _tflops(t.xla_flops)),
        ("all-reduce per chip per step",
         ", ".join(f"{_mib(b)} {d}" for d, b in sorted(p.all_reduce.items())) or "none"),
        (f"  gradients, once per parameter in {p.grad_reduce_dtype}",
         f"{_mib(sum(p.gradient_bytes.values()))} ("
         + ", ".join(f"{kind} {_mib(b)}" for kind, b in p.gradient_bytes.items())
         + f"; {p.num_params:,} parameters)"),
        ("  BatchNorm statistics (f32)", _mib(p.statistics_bytes)),
        ("  measured less statistics", f"{_mib(p.measured_gradient_bytes)}: "
                                       + ("each gradient once" if p.gradients_reduced_once else
                                          "NOT the parameters' bytes (more than 1% off)")),
    ]
    if p.other_collectives:
        rows.append(("other collectives", ", ".join(p.other_collectives)))
    e = p.estimate
    per_second = t.per_chip_batch / e.step_seconds if e.step_seconds else float("inf")
    rows += [
        (f"ESTIMATE ({chip.generation} published peaks)",
         f"{chip.peak_bf16_flops / 1e12:.0f} TFLOP/s bf16, {chip.hbm_bandwidth / 1e9:.0f} GB/s "
         f"HBM, {chip.ici_bandwidth / 1e9:.0f} GB/s ICI"),
        ("  compute-bound step", _ms(e.compute_seconds)),
        ("  HBM-bound step", "-" if e.hbm_seconds is None else _ms(e.hbm_seconds)),
        ("  all-reduce (ring)", _ms(e.all_reduce_seconds)),
        ("  roofline step / images/s per chip",
         f"{_ms(e.step_seconds)} / {per_second:,.0f} (upper bound"
         f"{'' if e.hbm_seconds is not None else '; without the HBM term'})"),
    ]
    if p.eval is not None:
        em = p.eval.compiled.memory
        rows += [
            ("eval batch", f"{p.eval_global_batch} global, {p.eval.per_chip_batch} per chip"),
            ("eval: lower / compile", f"{p.eval.compiled.lower_seconds:.1f} s / "
                                      f"{p.eval.compiled.compile_seconds:.1f} s"),
            ("eval HBM per chip: total", f"{gib(em.total)} (temporaries "
                                         f"{gib(em.temporaries)})"),
            ("eval FLOPs per chip per batch", _tflops(p.eval.flops)),
        ]
    notes = p.notes + ([chip.note] if chip.note else [])
    rows += [("note", note) for note in notes]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)
