"""picker3d model-info: what a model file was trained for (JSON)."""
import json


def add_args(sub):
    p = sub.add_parser("model-info", help="print what a model file was trained for (JSON); --write stores it beside "
                                          "the file")
    p.add_argument("--model", required=True, help="model file from 'picker3d train'")
    p.add_argument("--write", action="store_true",
                   help="(re)write MODEL.json, the metadata the Scipion layer reads without torch (model files from "
                        "picker3d 0.1 before it have none)")


def main(a):
    from ..modelfile import describe_model
    from ..modelinfo import read_model_info
    if a.write:
        describe_model(a.model)
    info = read_model_info(a.model)
    summary = {k: info.get(k) for k in ("classes", "diameters", "voxel_size", "bin", "thresholds", "best_val_f1",
                                        "labels", "network", "precision", "input_norm", "polarity_skew",
                                        "versions")}
    summary["epochs"] = len(info.get("history") or [])
    print(json.dumps(summary, indent=1))
    return 0
