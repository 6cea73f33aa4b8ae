"""PyTorch peer numbers for `bench gpu` (run by the GPU bundle when `import torch` works).

Measures on cuda:0, with the same shapes as bench/GpuBench.cs: GEMM TFLOP/s (f32 with TF32 off, tf32, bf16) at
1024-8192; add, softmax and layernorm GB/s on [8192, 8192] f32; one training step (batch 128, Adam 1e-3) of the
MLP 784-512-512-10 and of the CNN conv32-conv64-fc256-fc10 (3x3 convolutions with padding 1, 2x2 max pools).
Writes {key: value} JSON to the path given as the first argument and prints it.
"""
import json
import sys
import time

import torch


def best_seconds(fn, runs=10, warmup=3):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def gemm(results, device):
    for n in (1024, 2048, 4096, 8192):
        for kind in ("f32", "tf32", "bf16"):
            torch.backends.cuda.matmul.allow_tf32 = kind == "tf32"
            dtype = torch.bfloat16 if kind == "bf16" else torch.float32
            a = torch.rand(n, n, device=device, dtype=dtype) * 2 - 1
            b = torch.rand(n, n, device=device, dtype=dtype) * 2 - 1
            reps = max(3, int(2e11 / (2.0 * n ** 3)))

            def run():
                for _ in range(reps):
                    torch.matmul(a, b)

            results[f"gemm-{kind}-{n}"] = 2.0 * n ** 3 / (best_seconds(run) / reps) / 1e12
    torch.backends.cuda.matmul.allow_tf32 = False


def memory_bound(results, device):
    rows = cols = 8192
    size = 4.0 * rows * cols
    a = torch.rand(rows, cols, device=device) * 2 - 1
    b = torch.rand(rows, cols, device=device) * 2 - 1
    norm = torch.nn.LayerNorm(cols).to(device)
    with torch.no_grad():
        results["add"] = 3 * size / best_seconds(lambda: a + b) / 1e9
        results["softmax"] = 2 * size / best_seconds(lambda: torch.softmax(a, 1)) / 1e9
        results["layernorm"] = 2 * size / best_seconds(lambda: norm(a)) / 1e9


def models():
    nn = torch.nn
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))
    cnn = nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 7 * 7, 256), nn.ReLU(), nn.Linear(256, 10))
    return {"mlp": mlp, "cnn": cnn}


def training(results, device):
    x = torch.randn(128, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (128,), device=device)
    for name, model in models().items():
        model = model.to(device)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)

        def step():
            opt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()

        for _ in range(20):
            step()
        torch.cuda.synchronize()
        steps = 200
        start = time.perf_counter()
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
        results[f"train-{name}-ms"] = (time.perf_counter() - start) / steps * 1000


def main():
    if not torch.cuda.is_available():
        print("torch: CUDA is not available; no peer numbers")
        return 1
    device = torch.device("cuda:0")
    results = {}
    gemm(results, device)
    memory_bound(results, device)
    training(results, device)
    print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0)}")
    print(json.dumps(results, indent=1, sort_keys=True))
    if len(sys.argv) > 1:
        with open(sys.argv[1], "w", encoding="utf-8") as f:
            json.dump(results, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
