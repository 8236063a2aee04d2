# Operand-precision floor of split modes: each part product is computed with
# fp32 FFMA (cuBLAS fp32, TF32 off), i.e. ideal promotion; only operand bits lost.
import torch, time, sys
torch.backends.cuda.matmul.allow_tf32 = False
dev = "cuda"
def bf16(x): return x.to(torch.bfloat16).float()
def fp16(x): return x.to(torch.float16).float()
def tf32(x):  # round-to-nearest to 10 stored mantissa bits
    i = x.view(torch.int32)
    i = (i + 0x1000) & ~0x1FFF
    return i.view(torch.float32)
def parts(x, rnd, n):
    out = []; r = x
    for _ in range(n):
        p = rnd(r); out.append(p); r = r - p
    return out
def rowscale(x, dim):  # power-of-two scale so max |x| along dim ~ 2^14
    m = x.abs().amax(dim=dim, keepdim=True).clamp_min(1e-30)
    e = torch.floor(torch.log2(m))
    return torch.exp2(14 - e)
def mm(a, b): return a @ b
def split_mm(A, B, rnd, n, pairs, scale=False):
    if scale:
        sa = rowscale(A, 1); sb = rowscale(B, 0)
        A = A * sa; B = B * sb
    pa = parts(A, rnd, n); pb = parts(B, rnd, n)
    C = sum(mm(pa[i], pb[j]) for i, j in pairs)
    if scale: C = C / sa / sb
    return C
P3 = [(0,0),(0,1),(1,0)]
P6 = [(0,0),(0,1),(1,0),(0,2),(1,1),(2,0)]
def fail(C, ref, tol=1e-4):
    return ((C.double() - ref).abs() > tol + tol * ref.abs()).double().mean().item()
def run(M, N, K, dist):
    g = torch.Generator(device=dev).manual_seed(0)
    if dist == "normal":
        A = torch.randn(M, K, device=dev, generator=g); B = torch.randn(K, N, device=dev, generator=g)
    else:
        A = torch.rand(M, K, device=dev, generator=g); B = torch.rand(K, N, device=dev, generator=g)
    ref = A.double() @ B.double()
    res = {"eager_fp32": fail(A @ B, ref)}
    torch.backends.cuda.matmul.allow_tf32 = True
    res["eager_tf32"] = fail(A @ B, ref)
    torch.backends.cuda.matmul.allow_tf32 = False
    res["bf16x3"] = fail(split_mm(A, B, bf16, 2, P3), ref)
    res["bf16x6"] = fail(split_mm(A, B, bf16, 3, P6), ref)
    res["tf32x3"] = fail(split_mm(A, B, tf32, 2, P3), ref)
    res["fp16x3_scaled"] = fail(split_mm(A, B, fp16, 2, P3, scale=True), ref)
    res["fp16x3_unscaled"] = fail(split_mm(A, B, fp16, 2, P3), ref)
    print(f"{M}x{N}x{K} {dist}: " + " ".join(f"{k}={v:.2e}" for k, v in res.items()), flush=True)
    del A, B, ref; torch.cuda.empty_cache()
for dist in ["normal", "uniform"]:
    run(4096, 4096, 4096, dist)
    run(512, 2048, 1024, dist)
    run(256, 256, 524288, dist)
    run(2048, 3072, 768, dist)
# out_dtype support check
a = torch.randn(64, 64, device=dev, dtype=torch.bfloat16)
try:
    print("mm out_dtype fp32:", torch.mm(a, a, out_dtype=torch.float32).dtype)
except Exception as e:
    print("mm out_dtype unsupported:", e)
print(torch.__version__, torch.cuda.get_device_name())
