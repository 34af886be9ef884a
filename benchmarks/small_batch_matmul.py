"""Why IAPT's step stays under 70% of the matmul peak: matmuls with 8 rows through every frozen weight.

    python benchmarks/small_batch_matmul.py [--rounds 5] [--rows 8]

IAPT's step is a no-grad instruction prefill (large matmuls, near the peak) plus a forward and
backward pass of the one-token response: for each of the decoder's 210 linear layers, ``x @ Wᵀ``
forward and ``g @ W`` backward with only 8 rows (the batch). Those read all 425 MB of fp32 weights
twice and do little arithmetic, so their floor is the memory bandwidth. This measures, on the
embedded backbone's own weights, side by side in one process:

- ``read``: one pass over a tensor as large as all decoder weights (``sum``): the bandwidth floor;
- ``aten_forward`` / ``aten_backward``: the 210 products as PyTorch runs them in the training step;
- ``onednn_forward`` / ``onednn_backward``: the same through oneDNN's ``mkldnn._linear_pointwise`` (a
  private operator, measured only when this build has it) on the same plain weights, for comparison.

Writes benchmarks/results/small_batch_matmul.json.
"""
from __future__ import annotations

import torch

from harness.results import save
from harness.timing import embedded_backbone, side_by_side, timing_parser


def main() -> None:
    parser = timing_parser(__doc__, rounds=5)
    parser.add_argument("--rows", type=int, default=8)
    args = parser.parse_args()
    backbone = embedded_backbone()
    weights = [m.weight.detach() for m in backbone.transformer.modules() if isinstance(m, torch.nn.Linear)]
    nbytes = sum(w.numel() * w.element_size() for w in weights)
    x = {w.shape[1]: torch.randn(args.rows, w.shape[1]) for w in weights}  # inputs, forward
    g = {w.shape[0]: torch.randn(args.rows, w.shape[0]) for w in weights}  # output gradients, backward
    flat = torch.randn(nbytes // 4)

    steps = {"read": lambda: flat.sum(),
             "aten_forward": lambda: [x[w.shape[1]] @ w.t() for w in weights],
             "aten_backward": lambda: [g[w.shape[0]] @ w for w in weights]}
    onednn = getattr(torch.ops.mkldnn, "_linear_pointwise", None) if torch.backends.mkldnn.is_available() else None
    if onednn is not None:
        w0 = weights[0]
        assert torch.allclose(onednn(x[w0.shape[1]], w0, None, "none", [], ""), x[w0.shape[1]] @ w0.t(), atol=1e-4)
        steps["onednn_forward"] = lambda: [onednn(x[w.shape[1]], w, None, "none", [], "") for w in weights]
        steps["onednn_backward"] = lambda: [onednn(g[w.shape[0]], w.t(), None, "none", [], "") for w in weights]
    with torch.no_grad():
        times = side_by_side(steps, rounds=args.rounds)
    results = {}
    for name, s in times.items():
        flop = 0 if name == "read" else 2 * args.rows * nbytes / 4  # 2 FLOPs per weight per row
        results[name] = {**s, "gb_per_second": nbytes / s["median"] / 1e9, "gflops": flop / s["median"] / 1e9}
    path = save("small_batch_matmul", {"config": vars(args), "linear_layers": len(weights),
                                       "weight_megabytes": nbytes / 1e6, "results": results}, backbone.device)
    print(f"{len(weights)} linear layers, {nbytes / 1e6:.0f} MB of fp32 weights, {args.rows} rows")
    for name, r in results.items():
        print(f"{name:16s} {r['median'] * 1e3:7.1f} ms  {r['gb_per_second']:5.1f} GB/s of weights  "
              f"{r['gflops']:5.1f} GFLOP/s")
    print(f"written to {path}")


if __name__ == "__main__":
    main()
