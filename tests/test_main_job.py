"""The README's main-job command, run as written (minus the set-up step), in a scratch folder."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import tifffile

from zoo.restoration.metrics import normalized_psnr
from conftest import REPO

SETUP = "bash scripts/setup.sh && "


def main_job_command() -> str:
    readme = (REPO / "README.md").read_text()
    block = re.search(r"\*\*Run the main job\*\*.*?```bash\n(.*?)\n```", readme, re.S)
    assert block, "README must start with the main-job command in a bash block"
    command = block.group(1).strip()
    assert command.startswith(SETUP)
    return command[len(SETUP):].replace(".venv/bin/", str(Path(sys.executable).parent) + "/")


def test_readme_main_job_denoises_the_sample(tmp_path):
    shutil.copytree(REPO / "samples", tmp_path / "samples")
    env = {**os.environ, "ZOO_HOME": str(tmp_path / "home"), "ZOO_CACHE": str(tmp_path / "cache")}
    result = subprocess.run(main_job_command(), shell=True, cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    denoised = tifffile.imread(tmp_path / "results" / "actin_denoised.tif")
    noisy = tifffile.imread(tmp_path / "samples" / "hagen_actin_lowsnr.tif")
    reference = tifffile.imread(tmp_path / "samples" / "hagen_actin_highsnr.tif")
    assert denoised.shape == noisy.shape and denoised.dtype == np.float32
    assert normalized_psnr(denoised, reference) > normalized_psnr(noisy, reference) + 1.0
    assert (tmp_path / "results" / "actin_figure.png").stat().st_size > 10_000
