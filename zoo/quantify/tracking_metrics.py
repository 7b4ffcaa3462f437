"""How well a tracking matches known tracks: the fraction of true links found (and of found links
that are true), and of true divisions detected."""
from __future__ import annotations

from .tracking import Tracking


def _links(tracks_frames, parent_of) -> set:
    """Links ``((t1, id1), (t2, id2))`` between consecutive appearances of a track, and from a
    parent's last appearance to each child's first."""
    links = set()
    for tid, frames in tracks_frames.items():
        times = sorted(frames)
        links.update(((t1, frames[t1]), (t2, frames[t2])) for t1, t2 in zip(times, times[1:]))
        parent = parent_of.get(tid, 0)
        if parent and tracks_frames.get(parent):
            last = max(tracks_frames[parent])
            first = min(times)
            links.add(((last, tracks_frames[parent][last]), (first, frames[first])))
    return links


def score(result: Tracking, truth: list[dict[int, int]], true_tracks: list[tuple]) -> dict:
    """Compare with the truth of :func:`zoo.synthetic.time_lapse` (objects named by true id)."""
    true_frames: dict[int, dict[int, int]] = {}
    for t, mapping in enumerate(truth):
        for _, gid in mapping.items():
            true_frames.setdefault(gid, {})[t] = gid
    true_parent = {tid: parent for tid, _, _, parent in true_tracks}
    found_frames = {tr.id: {t: truth[t].get(label, -1) for t, label in tr.frames.items()} for tr in result.tracks}
    found_parent = {tr.id: tr.parent for tr in result.tracks}
    true_links, found_links = _links(true_frames, true_parent), _links(found_frames, found_parent)
    correct = true_links & found_links

    def division_sets(frames_of, parent_of) -> set:
        children: dict[int, list] = {}
        for tid, parent in parent_of.items():
            if parent and frames_of.get(tid) and frames_of.get(parent):
                children.setdefault(parent, []).append(frames_of[tid][min(frames_of[tid])])
        return {(frames_of[p][max(frames_of[p])], frozenset(c)) for p, c in children.items()}

    true_div, found_div = division_sets(true_frames, true_parent), division_sets(found_frames, found_parent)
    return {"links_true": len(true_links), "links_found": len(found_links), "links_correct": len(correct),
            "link_recall": len(correct) / max(len(true_links), 1), "link_precision": len(correct) / max(len(found_links), 1),
            "divisions_true": len(true_div), "divisions_found": len(found_div),
            "divisions_correct": len(true_div & found_div),
            "division_recall": len(true_div & found_div) / max(len(true_div), 1),
            "division_precision": len(true_div & found_div) / max(len(found_div), 1)}
