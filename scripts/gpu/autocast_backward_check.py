"""Does the memory's float32 chunk loop keep float32 in its *backward* when the model runs under
bf16 autocast and torch.compile? (diagnostic; the 06 step profile showed tensor-core `nvjet`
GEMMs in the HOPE loop's backward where the forward runs CUDA-core float32 GEMMs.)

    PYTHONPATH=$PWD python3 scripts/gpu/autocast_backward_check.py

One HOPE memory layer (`SelfModifyingMemory`, the 06 shapes: 16 rows x 512, d 256, 4 heads) on
CUDA, compiled by `nlcore.accel.compile.compiler("inductor")` (nlcore's settings): gradients of its
parameters and input from (a) eager float64 (the reference), (b) eager float32 with no autocast,
(c) compiled float32 with no autocast, (d) eager under bf16 autocast (forward only, as training
runs it: the projections in bf16, the memory loop in float32), (e) compiled under bf16 autocast.
Prints (b)-(e)'s largest error relative to (a)'s largest entry, (e)'s relative to (d) (the same
bf16 projections: what remains is the loop's backward precision), and the GEMM kernels of (e).
"""

from __future__ import annotations

import copy

import torch
from torch.profiler import ProfilerActivity, profile

from nlcore.accel.compile import compiler
from nlcore.models.memory_layers import SelfModifyingMemory


def grads(mem, u, st, w, autocast: bool, compiled: bool):
    fn = compiler("inductor")(mem) if compiled else mem
    u = u.detach().requires_grad_(True)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
        y, _ = fn(u, st, None)
    loss = (y.float() * w).sum()
    return torch.autograd.grad(loss, [u, *mem.parameters()])


def main() -> None:
    torch.manual_seed(0)
    B, T, d, H = 16, 512, 256, 4
    mem64 = SelfModifyingMemory(d, H, chunk=64).cuda().double()
    st64 = {k: 0.05 * torch.randn(B, *s, device="cuda", dtype=torch.float64) for k, s in mem64.state_shapes().items()}
    u64 = torch.randn(B, T, d, device="cuda", dtype=torch.float64)
    w64 = torch.randn(B, T, d, device="cuda", dtype=torch.float64)
    ref = grads(mem64, u64, st64, w64, False, False)
    mem = copy.deepcopy(mem64).float()
    st = {k: v.float() for k, v in st64.items()}
    u, w = u64.float(), w64.float()
    names = ["u", *(n for n, _ in mem.named_parameters())]

    def report(label, g, r):
        errs = [((a.double() - b.double()).abs().max() / b.double().abs().max()).item() for a, b in zip(g, r)]
        worst = max(zip(errs, names))
        print(f"{label:44s} largest relative error {worst[0]:.2e} ({worst[1]})", flush=True)

    import torch._functorch.config as functorch_config

    compiler("inductor")  # nlcore's process-wide compile settings
    print("backward_pass_autocast:", getattr(functorch_config, "backward_pass_autocast", "(no such setting)"))
    got = {}
    for label, ac, comp in (("eager float32", False, False), ("compiled float32", False, True),
                            ("eager, bf16 autocast", True, False), ("compiled, bf16 autocast", True, True)):
        got[label] = grads(mem, u, st, w, ac, comp)
        report(label + " vs float64", got[label], ref)
    report("compiled vs eager, both under bf16 autocast", got["compiled, bf16 autocast"], got["eager, bf16 autocast"])
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        grads(mem, u, st, w, True, True)
        torch.cuda.synchronize()
    gemms = {}
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA and ("gemm" in e.name or "nvjet" in e.name):
            gemms[e.name[:90]] = gemms.get(e.name[:90], 0) + 1
    print("\nGEMM kernels, forward + backward under autocast + compile (count):")
    for n, c in sorted(gemms.items(), key=lambda x: -x[1]):
        print(f"  {c:5d}  {n}")
    print("\nfor comparison, one (64, 64, 64) x (64, 64, 128) bmm per dtype:")
    for dt in (torch.float32, torch.bfloat16):
        a, b = torch.randn(64, 64, 64, device="cuda", dtype=dt), torch.randn(64, 64, 128, device="cuda", dtype=dt)
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            torch.bmm(a, b)
            torch.cuda.synchronize()
        print(f"  {str(dt):16s}", [e.name[:80] for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA])


if __name__ == "__main__":
    main()
