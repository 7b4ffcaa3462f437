"""Export every standard package to bioimage.io and run the official validator on it, offline.

Reproduce:  python scripts/check_bioimageio.py [--json OUT.json]

Prints one row per package: the `bioimageio test` status, each weight format's reproduction of
the test outputs, and the ops left to bioimage-zoo (no bioimage.io equivalent).
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from zoo.errors import InputError
from zoo.export.bioimageio import export
from zoo.registry import standard_store


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", help="write the results here")
    args = p.parse_args()
    from bioimageio.core import test_model

    rows = []
    print("| package | bioimageio test | onnx | pytorch_state_dict | left to bioimage-zoo |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for package in sorted((standard_store() / "packages").glob("*/*")):
            ref = f"{package.parent.name}@{package.name}"
            try:
                rdf, report = export(package, Path(tmp) / ref)
            except InputError as e:           # e.g. a classifier's canvas: no bioimage.io equivalent
                rows.append({"package": ref, "status": "not exported", "reason": str(e)})
                print(f"| {ref} | not exported: {e} | - | - | - |", flush=True)
                continue
            summary = test_model(str(rdf))
            formats = {}
            for detail in summary.details:
                for fmt in ("onnx", "pytorch_state_dict"):
                    if detail.name.startswith("Reproduce test outputs") and f"({fmt})" in detail.name:
                        formats[fmt] = detail.status
            row = {"package": ref, "status": summary.status, **formats, "unmapped": report.unmapped,
                   "failed": [f"{d.name}: {[e.msg for e in d.errors]}" for d in summary.details if d.status == "failed"]}
            rows.append(row)
            print(f"| {ref} | {summary.status} | {formats.get('onnx', '-')} | {formats.get('pytorch_state_dict', '-')} "
                  f"| {'; '.join(u.split(': ', 1)[1] for u in report.unmapped) or '-'} |", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
