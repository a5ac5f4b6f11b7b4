"""The hardware's ceiling for the study's LSTM shapes, with PyTorch's cuDNN LSTM (issue 13, point 7).

Not part of starscale's stack (no TensorFlow, no Spark): for GPU machines that have PyTorch but
not our stack (the ones the `device` tool lends run Python 3.12 + PyTorch, no TensorFlow). The
same shapes as the study's Keras model — Embedding(20000, 300) → LSTM(64) over 100 steps (the
last hidden state) → Linear(64, 5), cross-entropy, Adam — trained on synthetic batches already on
the GPU (no input pipeline), so the number is the device's ceiling for one training step, not
what train-lstm reaches. Batch 128 (the study's) and 1024; float32 and autocast float16
(mixed precision); samples/s after warm-up steps, timed with CUDA synchronisation, and one epoch
over 9,002,021 rows projected on one GPU. torch is imported only here, inside main().

    python bench/gpu_reference.py [--steps 200] [--out docs/bench/gpu_reference.json]

Without torch or without a CUDA device it says so, writes nothing and exits 0.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

EPOCH_ROWS = 9_002_021
OUT = Path(__file__).resolve().parent.parent / "docs" / "bench" / "gpu_reference.json"


def measure(torch, batch: int, mixed: bool, steps: int, warmup: int, vocab: int = 20_000,
            max_len: int = 100, embedding_dim: int = 300, units: int = 64) -> dict:
    """samples/s of full training steps (forward, backward, Adam) on one GPU."""
    nn = torch.nn
    device = torch.device("cuda")
    torch.manual_seed(42)

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(vocab, embedding_dim)
            self.lstm = nn.LSTM(embedding_dim, units, batch_first=True)   # cuDNN kernel
            self.out = nn.Linear(units, 5)

        def forward(self, ids):
            _, (h, _) = self.lstm(self.embedding(ids))
            return self.out(h[-1])

    model = Model().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    scaler = torch.cuda.amp.GradScaler(enabled=mixed)
    ids = torch.randint(2, vocab, (batch, max_len), device=device)
    labels = torch.randint(0, 5, (batch,), device=device)

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.float16, enabled=mixed):
            loss = nn.functional.cross_entropy(model(ids), labels)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    rate = batch * steps / seconds
    return {"batch_size": batch, "mixed_precision": mixed, "steps": steps,
            "seconds": round(seconds, 3), "ms_per_step": round(1000 * seconds / steps, 3),
            "samples_per_s": round(rate, 1),
            "epoch_9m_minutes": round(EPOCH_ROWS / rate / 60, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--batches", default="128,1024")
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args(argv)
    try:
        import torch
    except ImportError:
        print("gpu_reference: PyTorch is not installed here; nothing measured")
        return 0
    if not torch.cuda.is_available():
        print("gpu_reference: no CUDA GPU present; nothing measured")
        return 0
    torch.backends.cudnn.benchmark = True
    results = [measure(torch, int(b), mixed, args.steps, args.warmup)
               for b in args.batches.split(",") for mixed in (False, True)]
    report = {"benchmark": "gpu_reference", "gpu": torch.cuda.get_device_name(0),
              "torch": torch.__version__, "cuda": torch.version.cuda,
              "cudnn": torch.backends.cudnn.version(), "python": platform.python_version(),
              "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "command": "python " + " ".join(["bench/gpu_reference.py", *sys.argv[1:]]),
              "shapes": {"vocab": 20_000, "embedding_dim": 300, "units": 64, "max_len": 100},
              "epoch_rows": EPOCH_ROWS, "results": results}
    print(f"{report['gpu']}, torch {report['torch']}, cuDNN {report['cudnn']}")
    print("batch  mixed  ms/step  samples/s  9M epoch (min, 1 GPU)")
    for r in results:
        print(f"{r['batch_size']:>5}  {str(r['mixed_precision']):>5}  {r['ms_per_step']:>7}  "
              f"{r['samples_per_s']:>9,.0f}  {r['epoch_9m_minutes']:>6}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
