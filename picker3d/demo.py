"""The README's main command: the default workflow in a real Scipion project.

Simulates three tomograms (96x256x256, SNR 0.05, five species plus unlabelled crowders,
membranes and gold), writes the ground truth of the first one as the user's hand-picks,
then runs in a Scipion project: import tomograms → import annotations → masks → train
(time-boxed) → pick all tomograms → export coordinates. Prints each protocol's status, the
F1 on the two held-out tomograms, where the outputs are and how to open the project.
"""
import argparse
import json
import os
import shutil
import time

from picker3d.engine.cli import main as cli


def _report_classes(classify, pick, man, sim, diameters):
    """Class sizes, and how the classes split the correctly picked particles by true species."""
    import numpy as np

    from picker3d.engine.classification.mixture import clustering_scores
    from picker3d.engine.formats.readers import read_table
    from picker3d.engine.metrics import match
    result, info = classify.getResult()
    print(f"      classification: K={info['k']} (iteration {info['iteration']}), class sizes {info['sizes']}")
    truth, labels = [], []
    for t in man["tomograms"]:
        ref = read_table(os.path.join(sim, t["coords"]))
        picked = read_table(classify._absPath(classify._getExtraPath("tomograms", t["name"] + ".tsv")))
        radii = np.array([diameters[c] / 2.0 for c in ref.classes])
        pairs, _ = match(picked.xyz, ref.xyz, radii)
        for i, j in pairs:
            cluster = result.get(int(picked.extra["objId"][i]), (None,))[0]
            if cluster is not None:
                truth.append(ref.classes[j])
                labels.append(cluster)
    if labels:
        s = clustering_scores(truth, labels)
        print(f"      classes vs true species of the {len(labels)} correct picks: homogeneity "
              f"{s['homogeneity']:.3f}, completeness {s['completeness']:.3f}, ARI {s['ari']:.3f}")


def write_picks_picture(path, tomogram, picked, ref, diameters, slab=9):
    """A PNG of the central slab of ``tomogram`` (mean of ``slab`` planes) with the picks
    within it circled by class and the missed reference particles crossed."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from picker3d.engine.formats.mrc import read_volume
    from picker3d.engine.metrics import match
    vol, _ = read_volume(tomogram)
    zc = vol.shape[0] // 2
    z0, z1 = zc - slab // 2, zc + slab // 2 + 1
    img = vol[z0:z1].mean(axis=0)
    lo, hi = np.percentile(img, [1, 99])
    radii = np.array([diameters[c] / 2.0 for c in ref.classes])
    pairs, _ = match(picked.xyz, ref.xyz, radii)
    found = {j for _, j in pairs}
    names = list(diameters)
    colours = plt.get_cmap("tab10")
    fig, ax = plt.subplots(figsize=(7, 7 * img.shape[0] / img.shape[1]), dpi=110)
    ax.imshow(img, cmap="gray", vmin=lo, vmax=hi)
    for (x, y, z), c in zip(picked.xyz, picked.classes):
        r = diameters[c] / 2.0
        if z0 - 3 <= z <= z1 + 3:       # centred in the slab (give or take 3 planes): visible there
            ax.add_patch(plt.Circle((x, y), r, fill=False, lw=1.2, color=colours(names.index(c) % 10)))
    for j, (x, y, z) in enumerate(ref.xyz):
        if j not in found and z0 - 3 <= z <= z1 + 3:
            ax.plot(x, y, "x", color="red", ms=5)
    for i, c in enumerate(names):
        ax.plot([], [], "o", mfc="none", color=colours(i % 10), label=c)
    ax.legend(loc="upper right", fontsize=7, framealpha=0.7)
    ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def run(out_dir="demo_output", seed=0, shape=(96, 256, 256), snr=0.05, minutes=6.0, project="picker3d_demo"):
    from picker3d.engine.formats.readers import read_table
    from picker3d.engine.metrics import evaluate
    from picker3d.workflow import run_workflow, step, workflow_protocols, write_workflow
    t0 = time.time()
    out_dir = os.path.abspath(out_dir)
    sim = os.path.join(out_dir, "simulated")
    print(f"[1/3] simulate 3 tomograms {shape[0]}x{shape[1]}x{shape[2]} at SNR {snr} -> {sim}", flush=True)
    cli(["simulate", "--out", sim, "--seed", str(seed), "--n-tomograms", "3", "--snr", str(snr),
         "--shape", *map(str, shape)])
    with open(os.path.join(sim, "manifest.json")) as fh:
        man = json.load(fh)
    diameters = man["diameters"]
    ann = os.path.join(out_dir, "annotations")
    os.makedirs(ann, exist_ok=True)
    train_tomo = man["tomograms"][0]
    shutil.copy(os.path.join(sim, train_tomo["coords"]), os.path.join(ann, train_tomo["name"] + ".tsv"))
    wf = write_workflow(os.path.join(out_dir, "picker3d_workflow.json"),
                        workflow_protocols("./simulated", "./annotations", diameters, sampling=10.0,
                                           minutes=minutes))
    print(f"[2/3] Scipion workflow {wf} in project '{project}' (training budget {minutes:g} min)", flush=True)
    proj, prots = run_workflow(project, wf)
    pick = step(prots, "ProtPicker3DPick")
    print("[3/3] evaluate the picks against the simulated ground truth", flush=True)
    results = {}
    for t in man["tomograms"]:
        ref = read_table(os.path.join(sim, t["coords"]))
        r = evaluate(pick.getTable(t["name"]), ref, diameters)
        role = "training (annotated)" if t is train_tomo else "held out"
        results[t["name"]] = r
        per = ", ".join(f"{k} {v['f1']:.2f}" for k, v in r["per_class"].items())
        print(f"      {t['name']} ({role}): {len(pick.getTable(t['name']))} picks, F1 {r['f1']:.3f}, "
              f"mean class F1 {r['mean_class_f1']:.3f}, AP {r['ap']:.3f}  [{per}]")
    held = [results[t["name"]]["f1"] for t in man["tomograms"][1:]]
    print(f"held-out F1 {sum(held) / len(held):.3f}")
    shown = man["tomograms"][1]
    picture = write_picks_picture(os.path.join(out_dir, "picks.png"), os.path.join(sim, shown["name"] + ".mrc"),
                                  pick.getTable(shown["name"]), read_table(os.path.join(sim, shown["coords"])),
                                  diameters)
    print(f"picture of the picks on {shown['name']} (central slab): {picture}")
    export = step(prots, "ProtExportCoordinates3D")
    if len(prots) > 6:
        _report_classes(step(prots, "ProtPicker3DClassify"), pick, man, sim, diameters)
    print(f"outputs: picks (Scipion set) {os.path.join(proj.getPath(), pick.getPath())}; exported text "
          f"{os.path.join(proj.getPath(), export._getExportPath())}")
    print(f"open the project: . scripts/bootstrap.sh && python -m pyworkflow.apps.pw_project {project}")
    print(f"done in {time.time() - t0:.0f} s")
    return results


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m picker3d.demo", description=__doc__)
    p.add_argument("--out", default="demo_output")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--minutes", type=float, default=6.0, help="training budget")
    p.add_argument("--project", default="picker3d_demo")
    p.add_argument("--shape", type=int, nargs=3, default=[96, 256, 256])
    a = p.parse_args(argv)
    run(a.out, a.seed, tuple(a.shape), minutes=a.minutes, project=a.project)


if __name__ == "__main__":
    main()
