"""`zoo finetune ... --resume RUN_DIR` (issue 27.2): a fine-tuning stopped mid-run and resumed ends
with the weights of the uninterrupted fine-tuning, bitwise (CPU); the parent is part of what a
resume must share."""
from __future__ import annotations

import pytest
import pytorch_lightning as pl


class Stop(pl.Callback):
    """Dies at the start of a step, after that step's checkpoint was written (as a kill would)."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise RuntimeError("stopped")


def _finetune(parent, data, out, **kwargs):
    from zoo.trainers.finetune import finetune

    return finetune(parent, data, out, max_steps=8, val_every=2, patience=None, batch_size=2, patch=32,
                    val_fraction=0.4, progress=False, checkpoint_every=2, **kwargs)


@pytest.mark.slow
def test_a_stopped_finetuning_resumes_to_the_same_weights(tiny_package, image_folder, tmp_path):
    from safetensors.numpy import load_file

    reference = _finetune(tiny_package, image_folder, tmp_path / "ref")
    with pytest.raises(RuntimeError, match="stopped"):
        _finetune(tiny_package, image_folder, tmp_path / "child", callbacks=[Stop(6)])
    assert not (tmp_path / "child").exists()
    child = _finetune(tiny_package, image_folder, tmp_path / "child", resume=True)
    got, want = load_file(child / "weights" / "model.safetensors"), load_file(reference / "weights" / "model.safetensors")
    assert all((got[k] == want[k]).all() for k in want)
    from zoo import spec as specs

    assert specs.load(child).training.config["resumed_from_step"] == 6


@pytest.mark.slow
def test_a_finetuning_resume_from_a_training_run_is_refused(tiny_package, image_folder, tmp_path):
    from zoo import spec as specs
    from zoo.errors import InputError
    from zoo.trainers.fit import fit

    bp = specs.load(tiny_package)
    with pytest.raises(RuntimeError, match="stopped"):
        fit(bp, image_folder, tmp_path / "pkg", max_steps=8, steps_per_epoch=2, batch_size=2, patch=32,
            progress=False, val_fraction=0.4, checkpoint_every=2, callbacks=[Stop(4)])
    with pytest.raises(InputError, match="other settings .*trainer: run 'fit', now 'finetune'"):
        _finetune(tiny_package, image_folder, tmp_path / "child", resume=tmp_path / "pkg.run")
