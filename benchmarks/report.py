"""Turn bench_models.json (from one device run) into the table and the plot in
benchmarks/RESULTS.md / benchmarks/results_models.png.

    python benchmarks/make_results.py RUN.json [--png benchmarks/results_models.png]

Prints the Markdown section; the figures all come from the one run in RUN.json.
"""
import argparse
import json


def table(doc):
    meta, rows, builds = doc["meta"], doc["rows"], doc["builds"]
    out = [f"Card: **{meta['card']}**, {meta['date']}, PyTorch {meta['torch']}, CuPy {meta['cupy']}.",
           f"Command: `{meta['command']}`", "",
           "| model | precision | batch | cupyrt ms | PyTorch eager ms | cupyrt img/s | PyTorch img/s "
           "| speed-up | rel L2 vs torch FP32 | top-1 agree | CUDA graph |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        top1 = "" if r.get("top1_agreement") is None else f"{r['top1_agreement']:.3f}"
        out.append(f"| {r['model']} | {r['precision']} | {r['batch']} | {r['ours_ms']:.3f} | "
                   f"{r['torch_eager_ms']:.3f} | {r['ours_img_s']:.0f} | {r['torch_img_s']:.0f} | "
                   f"{r['speedup']:.2f}x | {r['rel_l2_vs_torch_fp32']:.1e} | {top1} | "
                   f"{'yes' if r['cuda_graph'] else 'no'} |")
    out += ["", "| model | precision | build cold s | build with timing cache s | layers in -> out |",
            "|---|---|---:|---:|---|"]
    for b in builds:
        cached = f"{b['cached_s']:.1f}" if "cached_s" in b else ""
        lo = f"{b['layers_in']} -> {b['layers_out']}" if "layers_out" in b else str(b["layers_in"])
        out.append(f"| {b['model']} | {b['precision']} | {b['cold_s']:.1f} | {cached} | {lo} |")
    return "\n".join(out)


def plot(doc, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = doc["rows"]
    labels = [f"{r['model']}\n{r['precision']} b{r['batch']}" for r in rows]
    x = range(len(rows))
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(rows)), 4))
    ax.bar([i - 0.2 for i in x], [r["ours_img_s"] for r in rows], 0.4, label="cupyrt")
    ax.bar([i + 0.2 for i in x], [r["torch_img_s"] for r in rows], 0.4, label="PyTorch eager")
    ax.set_xticks(list(x))
    ax.set_xticklabels(labels, fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("images (sequences) per second")
    ax.set_title(f"{doc['meta']['card']}, {doc['meta']['date'][:10]}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("json")
    p.add_argument("--png")
    args = p.parse_args()
    with open(args.json) as f:
        doc = json.load(f)
    print(table(doc))
    if args.png:
        plot(doc, args.png)


if __name__ == "__main__":
    main()
