"""Tracking: synthetic time lapses with known tracks (moving, dividing, touching nuclei), gaps,
empty frames, border objects, non-consecutive ids, the CTC output and the command line."""
from __future__ import annotations

import numpy as np
import pytest

from zoo.errors import InputError
from zoo.quantify.tracking import track
from zoo.quantify.tracking_metrics import score
from zoo.synthetic import time_lapse


def disc(shape, centre, radius, label, out=None):
    out = np.zeros(shape, np.int32) if out is None else out
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    out[(yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius ** 2] = label
    return out


@pytest.mark.parametrize("seed", [0, 1])
def test_links_and_divisions_on_synthetic_time_lapses(seed):
    labels, truth, tracks = time_lapse((128, 128), n=12, frames=30, seed=seed, division_rate=0.05, birth_rate=0.05,
                                       death_rate=0.01, miss_rate=0.01)
    assert sum(1 for t in tracks if t[3]) >= 6                   # the data divide
    result = track(labels)
    s = score(result, truth, tracks)
    assert s["link_recall"] >= 0.97 and s["link_precision"] >= 0.97, s
    assert s["division_recall"] >= 0.7 and s["division_precision"] >= 0.7, s
    assert result.relabelled.shape == labels.shape
    for t in range(len(labels)):                                 # the same objects, renamed by track
        assert np.array_equal(result.relabelled[t] > 0, labels[t] > 0)


def test_a_division_gives_one_parent_and_two_children(tmp_path):
    shape = (64, 64)
    frames = [disc(shape, (32, 32), 10, 5) for _ in range(3)]
    for t in range(3, 6):                                        # the parent splits, daughters move apart
        d = 6 + 2 * (t - 3)
        frames.append(disc(shape, (32, 32 - d), 7, 11, disc(shape, (32, 32 + d), 7, 4)))
    result = track(frames)
    assert result.divisions() == [(1, [2, 3])]
    assert [(t.id, t.begin, t.end, t.parent) for t in result.tracks] == [(1, 0, 2, 0), (2, 3, 5, 1), (3, 3, 5, 1)]
    result.write(tmp_path / "res")
    assert (tmp_path / "res" / "res_track.txt").read_text() == "1 0 2 0\n2 3 5 1\n3 3 5 1\n"
    import tifffile

    masks = sorted((tmp_path / "res").glob("mask*.tif"))
    assert [m.name for m in masks] == [f"mask{t:03d}.tif" for t in range(6)]
    assert set(np.unique(tifffile.imread(masks[4]))) == {0, 2, 3}


def test_a_missing_frame_is_bridged_and_empty_frames_do_not_break_tracks():
    shape = (48, 48)
    frames = [disc(shape, (20, 10 + 3 * t), 5, 100 + t) for t in range(6)]    # new ids every frame
    frames[3] = np.zeros(shape, np.int32)                                      # missed once
    result = track(frames)
    assert len(result.tracks) == 1 and sorted(result.tracks[0].frames) == [0, 1, 2, 4, 5]
    unbridged = track(frames, gap_closing=False)
    assert len(unbridged.tracks) == 2
    empty = [np.zeros(shape, np.int32)] * 2 + frames[:2] + [np.zeros(shape, np.int32)] * 3 + frames[4:]
    result = track(empty)
    assert [(t.begin, t.end) for t in result.tracks] == [(2, 3), (7, 8)]      # a gap of 3 frames is not bridged
    assert len(track([np.zeros(shape, np.int32)] * 3).tracks) == 0


def test_objects_on_the_border_and_far_jumps():
    shape = (40, 40)
    frames = [disc(shape, (0, 5 + 2 * t), 6, 9) + disc(shape, (39, 39), 4, 3) * (t < 2) for t in range(4)]
    result = track(frames)
    assert sorted((t.begin, t.end) for t in result.tracks) == [(0, 1), (0, 3)]
    jump = [disc(shape, (10, 5), 3, 1), disc(shape, (30, 35), 3, 1)]           # too far: a new object
    assert len(track(jump, max_distance=10).tracks) == 2


def test_bad_input_is_refused():
    with pytest.raises(InputError, match="same shape"):
        track([np.zeros((8, 8), np.int32), np.zeros((9, 8), np.int32)])
    with pytest.raises(InputError, match="no frames"):
        track([])


def test_zoo_track_on_the_command_line(tmp_path, capsys):
    import tifffile

    from zoo.cli import main as cli

    labels, _, _ = time_lapse((64, 64), n=5, frames=6, seed=3)
    paths = []
    for t, frame in enumerate(labels):
        paths.append(tmp_path / f"labels_t{t:02d}.tif")
        tifffile.imwrite(paths[-1], frame)
    assert cli(["track", *map(str, paths), "-o", str(tmp_path / "tracks")]) == 0
    assert "tracks over 6 frames" in capsys.readouterr().out
    lines = (tmp_path / "tracks" / "res_track.txt").read_text().split("\n")
    assert all(len(line.split()) == 4 for line in lines if line)
    tifffile.imwrite(tmp_path / "stack.tif", labels)
    assert cli(["track", str(tmp_path / "stack.tif"), "-o", str(tmp_path / "again")]) == 0
    assert (tmp_path / "again" / "res_track.txt").read_text() == (tmp_path / "tracks" / "res_track.txt").read_text()
