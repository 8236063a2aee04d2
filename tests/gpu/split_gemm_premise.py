"""Design-premise experiment for templates/split_gemm_sm90.cuh (docs/notes/split_gemm.md).

Question: with fp32 operands split into bf16 parts, which promotion interval
(tensor-core partial sums added into fp32 every `chunk` elements of K) keeps
the product as accurate as eager fp32 against an fp64 reference?

Modes, each scored by fail@1e-4 (|C - ref| > 1e-4 + 1e-4 |ref|), max abs error
and relative Frobenius error:
  eager      torch.mm fp32 (TF32 off)
  bf16xT/one one bf16 GEMM with K' = T_k * K (parts concatenated along K), fp32 out
  bf16xT/cC  the same on K-chunks of C elements, partial products added into an
             fp32 running sum in K order (emulates per-k-tile promotion; split-K
             emulated as S sequential runs summed in fp32)
  bf16xT/f64 parts multiplied in fp64: the operand-split error alone
T = 3: hi*hi + hi*lo + lo*hi (2 parts); T = 6: 3 parts, all products of order <= 2.
Needs a CUDA GPU; run by scripts/split_gemm_dev.sh.

`python3 split_gemm_premise.py --cpu-fp16` (no GPU, ~25 s) instead compares, with exact
(fp64) accumulation on 256x256x8192, bf16x3 / bf16x6 against fp16x3 with no scaling, a
power-of-two scale per (row, 32-wide k-tile) and one per (128-row, 32-wide k-tile) operand
tile (the PartsFp16Scaled format of templates/split_gemm_sm90.cuh).
"""
import sys
import time

import torch

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
dev = "cuda" if "--cpu-fp16" not in sys.argv else "cpu"


def parts(x, n):
    out, r = [], x
    for _ in range(n):
        p = r.to(torch.bfloat16)
        out.append(p)
        r = r - p.float()
    return out


def pairs(nparts):
    return [(i, j) for i in range(nparts) for j in range(nparts) if i + j <= nparts - 1]


def mm_f32out(a16, b16):
    try:
        return torch.mm(a16, b16, out_dtype=torch.float32)
    except (TypeError, RuntimeError):
        return None


def split_mm(ap, bp, nparts, k0, k1):
    """One bf16 GEMM over K' = terms*(k1-k0): fp32 output."""
    pr = pairs(nparts)
    acat = torch.cat([ap[i][:, k0:k1] for i, _ in pr], dim=1)
    bcat = torch.cat([bp[j][k0:k1, :] for _, j in pr], dim=0)
    return mm_f32out(acat, bcat)


def score(c, ref):
    err = (c.double() - ref).abs()
    fail = (err > 1e-4 + 1e-4 * ref.abs()) | ~torch.isfinite(c)
    return (fail.double().mean().item(), err.max().item(),
            (torch.linalg.norm(c.double() - ref) / torch.linalg.norm(ref)).item())


def fp16_parts_scaled(x, nparts, mode, tk=32):
    """fp16 parts of x (rows, K) scaled by 2^(14 - floor(log2 max|x|)) per block; returned in
    x's units (fp64). mode: 'none' (no scale), 'row' (per row and k-tile), 'tile128'."""
    rows, k = x.shape
    xt = x.view(rows, k // tk, tk)
    if mode == "row":
        mx = xt.abs().amax(dim=2, keepdim=True)
    elif mode == "tile128":
        mx = (xt.abs().view(rows // 128, 128, k // tk, tk).amax(dim=(1, 3), keepdim=True)
              .expand(rows // 128, 128, k // tk, 1).reshape(rows, k // tk, 1))
    else:
        mx = None
    if mx is None:
        scale = torch.ones_like(xt[:, :, :1])
    else:
        e = torch.where(mx > 0, torch.floor(torch.log2(mx)), torch.zeros_like(mx))
        scale = torch.pow(2.0, 14 - e)
    y = (xt * scale).view(rows, k)
    sv = scale.expand(rows, k // tk, tk).reshape(rows, k).double()
    out, r = [], y.clone()
    for _ in range(nparts):
        p = r.to(torch.float16).float()
        out.append(p.double() / sv)
        r = r - p
    return out


def cpu_fp16():
    torch.manual_seed(0)
    m = n = 256
    k = 8192
    for dist, scale in (("normal", 1.0), ("normal*1e-3", 1e-3), ("uniform", 1.0)):
        if dist.startswith("normal"):
            a, b = torch.randn(m, k) * scale, torch.randn(k, n)
        else:
            a, b = torch.rand(m, k), torch.rand(k, n)
        ref = a.double() @ b.double()
        rows = [("fp32 (CPU sgemm)", (a @ b).double())]
        for nparts, terms in ((2, 3), (3, 6)):
            ap = [p.double() for p in parts(a, nparts)]
            bp = [p.double() for p in parts(b, nparts)]
            rows.append((f"bf16x{terms} exact", sum(ap[i] @ bp[j] for i, j in pairs(nparts))))
        for mode in ("none", "row", "tile128"):
            ap = fp16_parts_scaled(a, 2, mode)
            bp = [p.t() for p in fp16_parts_scaled(b.t().contiguous(), 2, mode)]
            rows.append((f"fp16x3 scale={mode}", ap[0] @ bp[0] + ap[0] @ bp[1] + ap[1] @ bp[0]))
        for name, c in rows:
            f, mx, rf = score(c, ref)
            print(f"{m}x{n}x{k} {dist:>12} {name:>20} fail@1e-4={f:.3e} maxabs={mx:.2e} relF={rf:.2e}")
    return 0


def main():
    shapes = [(4096, 4096, 4096, 1), (256, 256, 524288, 32)]  # (m, n, k, split-K pieces)
    if len(sys.argv) > 1 and sys.argv[1] == "small":
        shapes = [(512, 512, 4096, 1)]
    if mm_f32out(torch.ones(16, 16, device=dev, dtype=torch.bfloat16),
                 torch.ones(16, 16, device=dev, dtype=torch.bfloat16)) is None:
        print("torch.mm(out_dtype=float32) unavailable: bf16 results would be rounded to bf16; abort")
        return 1
    print(f"{'shape':>18} {'dist':>7} {'mode':>14} {'fail@1e-4':>10} {'maxabs':>9} {'relF':>9}")
    for (m, n, k, splits) in shapes:
        for dist in ("normal", "uniform"):
            g = torch.Generator(device=dev).manual_seed(1234)
            if dist == "normal":
                a = torch.randn(m, k, device=dev, generator=g)
                b = torch.randn(k, n, device=dev, generator=g)
            else:
                a = torch.rand(m, k, device=dev, generator=g)
                b = torch.rand(k, n, device=dev, generator=g)
            ref = a.double() @ b.double()
            rows = [("eager fp32", torch.mm(a, b))]
            for nparts, terms in ((2, 3), (3, 6)):
                ap, bp = parts(a, nparts), parts(b, nparts)
                rows.append((f"bf16x{terms}/one", split_mm(ap, bp, nparts, 0, k)))
                for chunk in (64, 256, 4096):
                    if chunk > k:
                        continue
                    per = k // splits
                    total = torch.zeros(m, n, device=dev, dtype=torch.float32)
                    for s in range(splits):
                        run = torch.zeros(m, n, device=dev, dtype=torch.float32)
                        for k0 in range(s * per, (s + 1) * per, chunk):
                            run += split_mm(ap, bp, nparts, k0, min(k0 + chunk, (s + 1) * per))
                        total += run
                    rows.append((f"bf16x{terms}/c{chunk}", total))
                exact = sum(ap[i].double() @ bp[j].double() for i, j in pairs(nparts))
                rows.append((f"bf16x{terms}/f64", exact))
                del ap, bp
            for name, c in rows:
                f, mx, rf = score(c, ref)
                print(f"{m}x{n}x{k:>7} {dist:>7} {name:>14} {f:10.3e} {mx:9.2e} {rf:9.2e}", flush=True)
            del a, b, ref, rows
            torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    t0 = time.time()
    rc = cpu_fp16() if "--cpu-fp16" in sys.argv else main()
    print(f"premise experiment: {time.time() - t0:.1f} s")
    sys.exit(rc)
