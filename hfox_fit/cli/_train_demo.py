"""``hfox-fit train-demo``: the paper's ablation (which imperfection costs accuracy) on a fitted checkpoint.

torch is imported inside the command only.
"""

from __future__ import annotations

from ..exceptions import HfoxError
from ._common import add_command, add_quiet


def register(subparsers) -> None:
    p = add_command(
        subparsers,
        "train-demo",
        run_train_demo,
        help="train binarized networks with the fitted cells in the loop, switching each imperfection off",
        description=(
            "Train a binarized fully connected network (batch norm, straight-through estimator) whose weights "
            "live in pairs of simulated cells of the fitted model, under each condition (software, device, "
            "no_d2d, no_c2c, no_pink, no_rtn) and seed; write DIR/ablation.csv, DIR/ablation.png and "
            "DIR/summary.txt / summary.json: each condition's final accuracy with its spread and the "
            "imperfection whose removal recovers the most accuracy. Nothing is downloaded."
        ),
    )
    p.add_argument("--model", required=True, metavar="MODEL.pt", help="checkpoint of `hfox-fit export`")
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write the study to")
    p.add_argument("--dataset", default="digits", metavar="digits|PATH",
                   help="scikit-learn's 8x8 digits (default), or a local MNIST-style folder of IDX files "
                        "(train-images-idx3-ubyte, ... gzipped or not)")
    p.add_argument("--epochs", type=int, default=20, metavar="E", help="epochs per run (default: 20)")
    p.add_argument("--seeds", type=int, default=3, metavar="S", help="seeds per condition (default: 3)")
    p.add_argument("--conditions", default=None, metavar="LIST",
                   help="comma-separated conditions of software, device, no_d2d, no_c2c, no_pink, no_rtn "
                        "(default: all six; hfox_fit.torch.CONDITIONS)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where to train (default: cpu)")
    p.add_argument("--hidden", type=int, default=None, metavar="N",
                   help="hidden width (default: 256 for the digits, the paper's 3000 for 28x28 images)")
    p.add_argument("--lr", type=float, default=0.01, help="Adam's learning rate (default: 0.01)")
    p.add_argument("--batch-size", type=int, default=64, metavar="B", help="batch size (default: 64)")
    add_quiet(p, "no progress bar and no printed summary")


def run_train_demo(args) -> int:
    import time

    from ..torch import run_ablation
    from ..torch._study import summary_text

    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise HfoxError("--device cuda, but torch sees no CUDA device here; use --device cpu.")
    t0 = time.perf_counter()
    try:
        summary = run_ablation(args.model, args.out, dataset=args.dataset, epochs=args.epochs, seeds=args.seeds,
                               conditions=args.conditions, device=args.device, hidden=args.hidden,
                               batch_size=args.batch_size, lr=args.lr, progress=not args.quiet)
    except ImportError as err:  # scikit-learn missing for the digits
        raise HfoxError(str(err)) from err
    if not args.quiet:
        print(summary_text(summary, summary["meta"]), end="")
        print(f"wrote {args.out}/ablation.csv, ablation.png, summary.txt, summary.json "
              f"in {time.perf_counter() - t0:.1f} s")
    return 0
