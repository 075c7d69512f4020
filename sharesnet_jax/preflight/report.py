"""The planner's table (one row per fact, the estimates labelled as such) and the same figures
as data (`plan_record`, for --json and the tables of docs/planner.md)."""

from __future__ import annotations

from typing import Any

from sharesnet_jax.preflight.plan import Plan, Roofline, StepReport, describe
from sharesnet_jax.units import gib, mib

RECORD_VERSION = 1


def _tflops(flops: float | None) -> str:
    return "-" if flops is None else f"{flops / 1e12:.4g} TFLOP"


def _ms(seconds: float) -> str:
    return f"{1e3 * seconds:.3g} ms"


def bound_by(e: Roofline) -> str:
    terms = {"compute": e.compute_seconds, "HBM": e.hbm_seconds or 0.0,
             "all-reduce": e.all_reduce_seconds}
    return max(terms, key=terms.get)


def images_per_second(p: Plan) -> float:
    step = p.estimate.step_seconds
    return p.train.per_device_batch / step if step else float("inf")


def format_plan(p: Plan) -> str:
    """One two-column table; the estimate rows say they are estimates."""
    device, t, m = p.target.accelerator, p.train, p.train.compiled.memory
    unit = device.unit
    rows: list[tuple[str, str]] = [
        ("config", p.config_summary),
        ("topology", f"{p.target.name}: {p.target.num_devices} {unit}s, {p.target.hosts} host(s)"),
        ("batch", f"{p.global_batch} global, {t.per_device_batch} per {unit}"),
        ("train: lower / compile", f"{t.compiled.lower_seconds:.1f} s / "
                                   f"{t.compiled.compile_seconds:.1f} s"),
        (f"train memory per {unit}: arguments", gib(m.arguments)),
        ("  temporaries", gib(m.temporaries)),
        ("  generated code", gib(m.generated_code)),
        ("  outputs not aliased to arguments", gib(m.outputs - m.aliased)),
        ("  total / usable (published)", f"{gib(m.total)} / {gib(device.usable_bytes)} "
                                         f"({gib(device.memory_bytes)}): "
                                         f"{100 * m.total / device.usable_bytes:.0f}%"),
        ("  usable is", device.usable_note),
        (f"  largest batch per {unit} (ESTIMATE)",
         "-" if p.largest_batch is None else f"{p.largest_batch} (a power of two; state fixed, "
                                             "the rest linear in the batch)"),
        (f"train FLOPs per {unit} per step", f"{_tflops(t.flops)} (ours: 2 x MACs x batch x "
                                             f"{p.forward_passes} passes)"),
        ("  recomputed by remat", f"{_tflops(t.flops * (p.forward_passes - 3) / p.forward_passes)}"
                                  " (convolutions; elementwise recomputation not counted)"),
        ("  XLA cost analysis", _tflops(t.xla_flops)),
        (f"all-reduce per {unit} per step",
         ", ".join(f"{mib(b)} {d}" for d, b in sorted(p.all_reduce.items())) or "none"),
        (f"  gradients, once per parameter in {p.grad_reduce_dtype}",
         f"{mib(sum(p.gradient_bytes.values()))} ("
         + ", ".join(f"{kind} {mib(b)}" for kind, b in p.gradient_bytes.items())
         + f"; {p.num_params:,} parameters)"),
        ("  BatchNorm statistics (f32)", mib(p.statistics_bytes)),
        ("  measured less statistics", f"{mib(p.measured_gradient_bytes)}: "
                                       + ("each gradient once" if p.gradients_reduced_once else
                                          "NOT the parameters' bytes (more than 1% off)")),
    ]
    if p.other_collectives:
        rows.append(("other collectives", ", ".join(p.other_collectives)))
    e = p.estimate
    links = "ICI" if device.kind == "tpu" else "NVLink"
    network = (f", {device.network_bandwidth / 1e9:.0f} GB/s network per {unit} (assumed)"
               if device.network_bandwidth and p.target.hosts > 1 else "")
    rows += [
        (f"ESTIMATE ({device.name} published peaks)",
         f"{device.peak_bf16_flops / 1e12:.0f} TFLOP/s bf16, "
         f"{device.memory_bandwidth / 1e9:.0f} GB/s HBM, "
         f"{device.link_bandwidth / 1e9:.0f} GB/s {links}{network}"),
        ("  compute-bound step", _ms(e.compute_seconds)),
        ("  HBM-bound step", "-" if e.hbm_seconds is None else _ms(e.hbm_seconds)),
        ("  all-reduce (ring)", _ms(e.all_reduce_seconds)),
        (f"  roofline step / images/s per {unit}",
         f"{_ms(e.step_seconds)} / {images_per_second(p):,.0f} (upper bound"
         f"{'' if e.hbm_seconds is not None else '; without the HBM term'})"),
    ]
    if p.eval is not None:
        em = p.eval.compiled.memory
        rows += [
            ("eval batch", f"{p.eval_global_batch} global, {p.eval.per_device_batch} per {unit}"),
            ("eval: lower / compile", f"{p.eval.compiled.lower_seconds:.1f} s / "
                                      f"{p.eval.compiled.compile_seconds:.1f} s"),
            (f"eval memory per {unit}: total", f"{gib(em.total)} (temporaries "
                                               f"{gib(em.temporaries)})"),
            (f"eval FLOPs per {unit} per batch", _tflops(p.eval.flops)),
        ]
    notes = p.notes + ([device.note] if device.note else [])
    rows += [("note", note) for note in notes]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def _step_record(s: StepReport) -> dict[str, Any]:
    m = s.compiled.memory
    return {"per_device_batch": s.per_device_batch,
            "lower_seconds": s.compiled.lower_seconds,
            "compile_seconds": s.compiled.compile_seconds,
            "memory_bytes": {"arguments": m.arguments, "temporaries": m.temporaries,
                             "generated_code": m.generated_code,
                             "outputs_not_aliased": m.outputs - m.aliased, "total": m.total},
            "flops": s.flops, "xla_flops": s.xla_flops}


def target_record(cluster) -> dict[str, Any]:
    device = cluster.accelerator
    return {"topology": cluster.name, "kind": device.kind, "accelerator": device.name,
            "device_kind": getattr(cluster.devices[0], "device_kind", None) if cluster.devices
            else None, "devices": cluster.num_devices, "hosts": cluster.hosts,
            "memory_bytes": device.memory_bytes, "usable_bytes": device.usable_bytes,
            "usable_note": device.usable_note, "peak_bf16_flops": device.peak_bf16_flops,
            "memory_bandwidth": device.memory_bandwidth, "link_bandwidth": device.link_bandwidth,
            "network_bandwidth": device.network_bandwidth}


def plan_record(p: Plan, context: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every figure of `format_plan` as data; `context` adds what the caller knows (versions)."""
    e = p.estimate
    return {
        "version": RECORD_VERSION, **(context or {}), "fits": True, "config": p.config_summary,
        "target": target_record(p.target), "global_batch": p.global_batch,
        "train": _step_record(p.train), "forward_passes": p.forward_passes,
        "largest_per_device_batch_estimate": p.largest_batch,
        "all_reduce_bytes": dict(p.all_reduce), "other_collectives": list(p.other_collectives),
        "num_params": p.num_params, "grad_reduce_dtype": p.grad_reduce_dtype,
        "gradient_bytes": dict(p.gradient_bytes), "statistics_bytes": p.statistics_bytes,
        "measured_gradient_bytes": p.measured_gradient_bytes,
        "gradients_reduced_once": p.gradients_reduced_once,
        "estimate": {"compute_seconds": e.compute_seconds, "hbm_seconds": e.hbm_seconds,
                     "all_reduce_seconds": e.all_reduce_seconds, "step_seconds": e.step_seconds,
                     "images_per_second_per_device": images_per_second(p),
                     "bound_by": bound_by(e)},
        "eval": None if p.eval is None else {**_step_record(p.eval),
                                             "global_batch": p.eval_global_batch},
        "notes": p.notes + ([p.target.accelerator.note] if p.target.accelerator.note else []),
    }


def verdict_record(verdict, topology: str, config, context: dict[str, Any] | None = None
                   ) -> dict[str, Any]:
    """A does-not-fit verdict as data: what was asked, what it needs, what would fit."""
    return {"version": RECORD_VERSION, **(context or {}), "config": describe(config),
            "topology": topology, "global_batch": config.batch_size, **verdict.record,
            "message": str(verdict)}
