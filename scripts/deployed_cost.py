"""Batch-1 latency of a petloc checkpoint's deployed graph beside a YOLOv8n checkpoint's, on the same
machine in one run: eager PyTorch, then onnxruntime, each engine's two models timed in turns.

    python scripts/deployed_cost.py RUN/checkpoints/best.ckpt \
        --yolo yolo_ref/runs/NAME/weights/best.pt --yolo-imgsz 320 --yolo-lib yolo_ref/lib

petloc's graph is :class:`petloc.models.deployed.InferenceModel` (uint8 NHWC in; normalization, the
run's inference options and the box decoding inside; batch norms folded), exported as
``petloc-export`` does. YOLO's is its fused network on a float NCHW tensor (``YOLO.export(format=
"onnx")``), without its preprocessing or non-maximum suppression, which run outside the graph: its
figure is a lower bound of what a deployed YOLO pays. ``yolo_reference.py`` installs the library
and trains the checkpoint.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import onnxruntime as ort
import torch

from petloc.checkpoint import load_model
from petloc.cli.export import median_ms, onnx_call
from petloc.models.deployed import InferenceModel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="a petloc checkpoint")
    parser.add_argument("--yolo", type=Path, required=True, help="an ultralytics checkpoint (best.pt)")
    parser.add_argument("--yolo-imgsz", type=int, default=320, help="the side YOLO was trained at")
    parser.add_argument("--yolo-lib", type=Path, required=True, help="the folder ultralytics is installed in")
    parser.add_argument("--runs", type=int, default=200, help="timed calls per model and engine")
    args = parser.parse_args()
    sys.path.insert(0, str(args.yolo_lib.resolve()))
    threads = torch.get_num_threads()
    from ultralytics import YOLO

    module, cfg = load_model(args.checkpoint)
    petloc_model = InferenceModel(module)
    side = cfg.image_size
    petloc_input = torch.randint(0, 256, (1, side, side, 3), dtype=torch.uint8)
    yolo = YOLO(str(args.yolo))
    yolo_model = yolo.model.fuse().eval()
    yolo_input = torch.rand(1, 3, args.yolo_imgsz, args.yolo_imgsz)

    def eager(model: torch.nn.Module, x: torch.Tensor) -> object:
        with torch.inference_mode():
            return model(x)

    torch.set_num_threads(threads)  # ultralytics sets one thread fewer than the cores
    # one engine at a time: each keeps its threads spinning for a while after a call
    report = {
        f"torch_{name}_ms": value
        for name, value in median_ms(
            {
                "petloc": lambda: eager(petloc_model, petloc_input),
                "yolo": lambda: eager(yolo_model, yolo_input),
            },
            args.runs,
        ).items()
    }
    with tempfile.TemporaryDirectory() as tmp:
        petloc_onnx = Path(tmp) / "petloc.onnx"
        # exported as petloc-export does (traced on a batch of two), run by onnxruntime at batch 1
        petloc_ort = onnx_call(petloc_model, petloc_input.repeat(2, 1, 1, 1), petloc_onnx, petloc_input)
        yolo_onnx = Path(yolo.export(format="onnx", imgsz=args.yolo_imgsz, batch=1, simplify=False))
        yolo_session = ort.InferenceSession(str(yolo_onnx), providers=["CPUExecutionProvider"])
        yolo_feed = {yolo_session.get_inputs()[0].name: yolo_input.numpy()}
        calls = {"petloc": petloc_ort, "yolo": lambda: yolo_session.run(None, yolo_feed)}
        report |= {f"onnxruntime_{name}_ms": value for name, value in median_ms(calls, args.runs).items()}
        report["onnx_mb"] = {
            "petloc": round(petloc_onnx.stat().st_size / 2**20, 2),
            "yolo": round(yolo_onnx.stat().st_size / 2**20, 2),
        }
    report |= {"petloc_side": side, "yolo_side": args.yolo_imgsz, "torch_threads": threads}
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in report.items()}))


if __name__ == "__main__":
    main()
