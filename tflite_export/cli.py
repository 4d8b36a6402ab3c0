"""Command line: `python -m tflite_export {export,inspect} ...`.

```
python -m tflite_export export model.keras out.tflite --precision int8_full \
    --representative x_calib.npy
python -m tflite_export inspect out.tflite
```
"""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tflite_export")
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("export", help="verified inference export")
    e.add_argument("model", help=".keras file of a stripped sparse model")
    e.add_argument("out")
    e.add_argument("--precision", default="float32")
    e.add_argument("--representative", help=".npy of input samples")
    e.add_argument("--optimize", default="latency",
                   choices=("latency", "size", "sparse"),
                   help="keep the faster encoding (default), the smaller "
                   "file, or the sparse encoding")
    i = sub.add_parser("inspect", help="list ops, sparse tensors and the "
                       "runtime metadata")
    i.add_argument("tflite")
    args = p.parse_args(argv)
    if args.cmd == "inspect":
        from tflite_export.flatbuffer_inspect import inspect_flatbuffer
        from tflite_export.metadata import read_metadata

        info = inspect_flatbuffer(args.tflite).to_dict()
        info["metadata"] = read_metadata(args.tflite)
        print(json.dumps(info, indent=2))
        return 0
    import keras
    import numpy as np

    from tflite_export.inference import export_inference

    model = keras.saving.load_model(args.model)
    rep = np.load(args.representative) if args.representative else None
    report = export_inference(model, args.out, precision=args.precision,
                              representative_data=rep, optimize=args.optimize)
    print(report.to_markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
