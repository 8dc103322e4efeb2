"""The Numenta Anomaly Benchmark (NAB) scorer: windows, sigmoid rewards, profiles, thresholds.

This module implements NAB's published scoring method (v1.1, as in ``nab/sweeper.py``,
``nab/optimizer.py`` and ``nab/scorer.py`` of the NAB repository) so that detector outputs
can be scored inside Vigil without NAB's code:

- Each labelled anomaly sits in a *window*. Rows are matched to windows by timestamp
  equality: a window opens on the row whose timestamp equals its start and closes after
  the row whose timestamp equals its end (the first such row).
- The first ``min(floor(0.15 * n), 750)`` rows of each file are *probationary* and are not
  scored.
- A row is a detection when its anomaly score is at or above the threshold. In a window
  only the earliest detection counts; it earns ``A_TP * sigma(p) / sigma(-1)`` where
  ``sigma(p) = 2 / (1 + exp(5 p)) - 1`` is the scaled sigmoid and ``p`` the relative
  position (``-1`` at the window's left edge, ``0`` just past its right edge). A window
  without a detection costs ``A_FN``.
- Every detection outside a window costs ``A_FP`` times ``sigma`` of its distance past
  the previous window in window widths (``-1`` when there is no previous window), so a
  detection just after a window costs little.
- One threshold for the whole corpus is chosen to maximise the summed raw score (NAB's
  optimizer sweeps every distinct anomaly score, highest first).
- The corpus score is normalised as ``100 * (S - S_null) / (S_perfect - S_null)``, with
  ``S_null = -A_FN * W`` (a detector that never fires) and ``S_perfect = A_TP * W`` for
  ``W`` windows.

The three application profiles are in :data:`PROFILES`. ``A_TN`` is part of each profile
but, as in NAB, true negatives do not change the score.

Examples
--------
One file of 100 rows with one window on rows 40..49 (probation is the first 15 rows):

>>> import numpy as np
>>> ts = np.arange(100) * 60.0                       # float epoch seconds
>>> windows = {"f": [(ts[40], ts[49])]}
>>> scores = np.zeros(100)
>>> scores[40] = 0.9                                 # at the window's left edge
>>> res = score_corpus({"f": (ts, scores)}, windows, "standard")
>>> res.threshold, round(res.raw, 6), round(res.score, 2)
(0.9, 1.0, 100.0)
>>> scores[90] = 0.95                                # plus a false positive far after it
>>> res = score_corpus({"f": (ts, scores)}, windows, "standard")
>>> round(res.raw, 4)
0.89
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "PROFILES",
    "FileSweep",
    "NABScore",
    "Profile",
    "load_results",
    "load_series",
    "load_windows",
    "optimize_threshold",
    "probationary_length",
    "scaled_sigmoid",
    "score_corpus",
    "sweep_file",
]


@dataclass(frozen=True, slots=True)
class Profile:
    """An application profile: NAB's weights for true/false positives/negatives.

    Parameters
    ----------
    name
        The profile's name as NAB spells it.
    a_tp
        Reward for the earliest detection in a window (at the window's left edge).
    a_fp
        Cost of a detection outside every window (far from any window).
    a_tn
        True-negative weight; listed for completeness, NAB does not use it.
    a_fn
        Cost of a window without a detection.
    """

    name: str
    a_tp: float
    a_fp: float
    a_tn: float
    a_fn: float


#: NAB's three application profiles (``config/profiles.json``).
PROFILES: Mapping[str, Profile] = {
    "standard": Profile("standard", a_tp=1.0, a_fp=0.11, a_tn=1.0, a_fn=1.0),
    "reward_low_FP_rate": Profile("reward_low_FP_rate", a_tp=1.0, a_fp=0.22, a_tn=1.0, a_fn=1.0),
    "reward_low_FN_rate": Profile("reward_low_FN_rate", a_tp=1.0, a_fp=0.11, a_tn=1.0, a_fn=2.0),
}

# NAB's optimizer starts its sweep above every valid score, where nothing is detected.
_NO_DETECTION_THRESHOLD = 1.1


def scaled_sigmoid(position: float) -> float:
    """NAB's scaled sigmoid of a relative position: ``2 / (1 + exp(5 p)) - 1``.

    ``-1`` (a window's left edge) gives 0.98661, ``0`` gives 0, and anything beyond 3 gives
    ``-1`` exactly.

    Parameters
    ----------
    position
        Relative position in window widths; negative inside a window.

    Examples
    --------
    >>> round(scaled_sigmoid(-1.0), 5), scaled_sigmoid(0.0), scaled_sigmoid(3.5)
    (0.98661, 0.0, -1.0)
    """
    if position > 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * position)) - 1.0


_MAX_TP = scaled_sigmoid(-1.0)


def probationary_length(n_rows: int, probation_percent: float = 0.15) -> float:
    """Rows at the start of a file that NAB does not score: ``min(floor(p n), p 5000)``.

    Parameters
    ----------
    n_rows
        Rows in the file.
    probation_percent
        NAB's probationary fraction (0.15).

    Examples
    --------
    >>> probationary_length(1000), probationary_length(22695)
    (150, 750.0)
    """
    return min(math.floor(probation_percent * n_rows), probation_percent * 5000)


# --------------------------------------------------------------------------- timestamps


def _as_datetime64(values: Any) -> np.ndarray:
    """Timestamps as ``datetime64[us]``: strings, datetimes, datetime64 or epoch seconds.

    Aware datetimes are converted to UTC; naive ones and strings are taken as they are.
    """
    arr = np.asarray(values)
    if arr.dtype.kind == "M":
        return arr.astype("datetime64[us]")
    if arr.dtype.kind in "iuf":
        micros = np.round(arr.astype(np.float64) * 1e6).astype(np.int64)
        return micros.astype("datetime64[us]")
    if arr.dtype.kind == "U":
        return arr.astype("datetime64[us]")
    out = []
    for v in arr.ravel().tolist():
        if isinstance(v, dt.datetime) and v.tzinfo is not None:
            v = v.astimezone(dt.UTC).replace(tzinfo=None)
        out.append(np.datetime64(v, "us"))
    return np.array(out, dtype="datetime64[us]").reshape(arr.shape)


# --------------------------------------------------------------------------- loading


def load_windows(path: str | Path) -> dict[str, list[tuple[np.datetime64, np.datetime64]]]:
    """Read NAB's ``combined_windows.json``: ``{file: [(start, end), ...]}``.

    Parameters
    ----------
    path
        The JSON file (e.g. ``dev_combined_windows.json``).

    Examples
    --------
    >>> import json, tempfile
    >>> from pathlib import Path
    >>> p = Path(tempfile.mkdtemp()) / "w.json"
    >>> _ = p.write_text(json.dumps({"a.csv": [["2014-04-10 07:15:00.000000",
    ...                                         "2014-04-11 16:45:00.000000"]]}))
    >>> load_windows(p)["a.csv"][0][1]
    np.datetime64('2014-04-11T16:45:00.000000')
    """
    raw = json.loads(Path(path).read_text())
    out: dict[str, list[tuple[np.datetime64, np.datetime64]]] = {}
    for name, wins in raw.items():
        pairs = []
        for start, end in wins:
            s, e = _as_datetime64([start, end])
            pairs.append((s, e))
        out[name] = pairs
    return out


def _read_two_columns(path: str | Path, column: str) -> tuple[np.ndarray, np.ndarray]:
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        col = header.index(column)
        stamps: list[str] = []
        vals: list[float] = []
        for row in reader:
            stamps.append(row[0])
            vals.append(float(row[col]))
    return _as_datetime64(stamps), np.asarray(vals, dtype=np.float64)


def load_series(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a NAB data file (``timestamp,value``) as ``(datetime64[us] array, floats)``.

    Parameters
    ----------
    path
        The CSV file.
    """
    return _read_two_columns(path, "value")


def load_results(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a NAB results file (``timestamp,anomaly_score,...``) as two arrays.

    Parameters
    ----------
    path
        The CSV file, e.g. ``numenta_nyc_taxi.csv``.
    """
    return _read_two_columns(path, "anomaly_score")


# --------------------------------------------------------------------------- per-file sweep


@dataclass(frozen=True, slots=True)
class FileSweep:
    """One file prepared for scoring: NAB's per-row window membership and raw rewards.

    ``window[i]`` is the index (into the file's window list) of the window row ``i`` is
    in, ``-1`` outside every window and ``-2`` in the probationary period; ``unweighted[i]``
    is the scaled sigmoid for the row before the profile's weights are applied. Build it
    with :func:`sweep_file`.
    """

    name: str
    scores: np.ndarray
    window: np.ndarray
    unweighted: np.ndarray
    n_windows: int

    def weighted(self, profile: Profile) -> np.ndarray:
        """The row's reward if detected (NAB's ``sweepScore``) under ``profile``."""
        inside = self.window >= 0
        return np.where(
            inside,
            self.unweighted * profile.a_tp / _MAX_TP,
            self.unweighted * profile.a_fp,
        )


def sweep_file(
    name: str,
    timestamps: Any,
    scores: Any,
    windows: Sequence[tuple[Any, Any]],
    probation_percent: float = 0.15,
) -> FileSweep:
    """Mark each row of one file with its window and its unweighted NAB reward.

    Follows NAB's ``Sweeper.calcSweepScore`` row by row, including its quirks: a window
    is entered only when a row's timestamp equals the next window's start, its right edge
    is the *first* row with the end timestamp, and rows are matched by position.

    Parameters
    ----------
    name
        The file's name (for messages).
    timestamps
        Row timestamps (strings, datetimes, datetime64 or float epoch seconds).
    scores
        Anomaly scores, one per row.
    windows
        The file's ``(start, end)`` windows, in time order.
    probation_percent
        NAB's probationary fraction.

    Examples
    --------
    >>> import numpy as np
    >>> ts = np.arange(20) * 60.0
    >>> sw = sweep_file("f", ts, np.zeros(20), [(ts[10], ts[14])])
    >>> sw.window.tolist()
    [-2, -2, -2, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, -1, -1, -1, -1, -1]
    """
    ts = _as_datetime64(timestamps).astype(np.int64)
    sc = np.asarray(scores, dtype=np.float64)
    n = len(ts)
    if len(sc) != n:
        msg = f"{name}: {n} timestamps but {len(sc)} scores"
        raise ValueError(msg)
    pending = [tuple(int(t) for t in _as_datetime64(list(w)).astype(np.int64)) for w in windows]
    first_index: dict[int, int] = {}
    ts_list = ts.tolist()
    for i, t in enumerate(ts_list):
        first_index.setdefault(t, i)

    prob_len = probationary_length(n, probation_percent)
    window = np.full(n, -1, dtype=np.int64)
    unweighted = np.empty(n, dtype=np.float64)
    next_w = 0
    cur: tuple[int, ...] | None = None
    cur_id = -1
    cur_right = 0
    cur_width = 0.0
    prev_right: int | None = None
    prev_width = 0.0
    for i, t in enumerate(ts_list):
        if next_w < len(pending) and t == pending[next_w][0]:
            cur = pending[next_w]
            cur_id = next_w
            next_w += 1
            if cur[1] not in first_index:
                msg = f"{name}: window end {cur[1]} is not a row timestamp"
                raise ValueError(msg)
            cur_right = first_index[cur[1]]
            cur_width = float(cur_right - first_index[cur[0]] + 1)
        if cur is not None:
            unweighted[i] = scaled_sigmoid(-(cur_right - i + 1) / cur_width)
        elif prev_right is None:
            unweighted[i] = -1.0
        else:
            # NAB divides by (width - 1); a one-row window would divide by zero there too.
            unweighted[i] = scaled_sigmoid(abs(prev_right - i) / (prev_width - 1.0))
        if i < prob_len:
            window[i] = -2
        elif cur is not None:
            window[i] = cur_id
        if cur is not None and t == cur[1]:
            prev_right = i
            prev_width = cur_width
            cur = None
    return FileSweep(name, sc, window, unweighted, len(pending))


# --------------------------------------------------------------------------- corpus sweep


@dataclass(frozen=True, slots=True)
class _Sweep:
    thresholds: np.ndarray  # descending; first is 1.1 (no detection)
    totals: np.ndarray  # raw corpus score at each threshold
    base: float


def _corpus_sweep(sweeps: Sequence[FileSweep], profile: Profile) -> _Sweep:
    """Raw score for every distinct threshold (NAB's ``calcScoreByThreshold``)."""
    scores_l, reward_l, wid_l = [], [], []
    offset = 0
    for sw in sweeps:
        keep = sw.window != -2
        scores_l.append(sw.scores[keep])
        reward_l.append(sw.weighted(profile)[keep])
        w = sw.window[keep]
        wid_l.append(np.where(w >= 0, w + offset, -1))
        offset += sw.n_windows
    scores = np.concatenate(scores_l) if scores_l else np.zeros(0)
    reward = np.concatenate(reward_l) if reward_l else np.zeros(0)
    wid = np.concatenate(wid_l) if wid_l else np.zeros(0, dtype=np.int64)
    # Only windows with at least one scorable row take part (as in NAB's scoreParts).
    base = -profile.a_fn * len(np.unique(wid[wid >= 0]))

    order = np.argsort(-scores, kind="stable")
    s_sorted, r_sorted, w_sorted = scores[order], reward[order], wid[order]
    incr = np.where(w_sorted < 0, r_sorted, 0.0)
    inside = np.flatnonzero(w_sorted >= 0)
    if len(inside):
        # Within a window the score is the best reward detected so far; rewards in a
        # window are positive and below 2, so adding 4 * window id lets one running max
        # restart at each window after a lexicographic sort.
        sub = inside[np.lexsort((inside, w_sorted[inside]))]
        ws = w_sorted[sub]
        run = np.maximum.accumulate(r_sorted[sub] + 4.0 * ws) - 4.0 * ws
        start = np.r_[True, ws[1:] != ws[:-1]]
        prev = np.where(start, -profile.a_fn, np.r_[0.0, run[:-1]])
        incr[sub] = run - prev
    cum = np.cumsum(incr)
    # The score at threshold t counts every row with score >= t: the last row of each run
    # of equal scores.
    last = np.r_[s_sorted[1:] != s_sorted[:-1], True] if len(s_sorted) else np.zeros(0, bool)
    idx = np.flatnonzero(last)
    thresholds = np.r_[_NO_DETECTION_THRESHOLD, s_sorted[idx]]
    totals = base + np.r_[0.0, cum[idx]]
    return _Sweep(thresholds, totals, base)


ResultsInput = Mapping[str, Any]


def _prepare(
    results: ResultsInput,
    windows: Mapping[str, Sequence[tuple[Any, Any]]],
    probation_percent: float,
) -> list[FileSweep]:
    sweeps = []
    for name in sorted(results):
        value = results[name]
        if (
            isinstance(value, tuple)
            and len(value) == 2
            and all(isinstance(v, np.ndarray) for v in value)
        ):
            ts, sc = value
        else:
            pairs = list(value)
            ts = [p[0] for p in pairs]
            sc = [p[1] for p in pairs]
        sweeps.append(sweep_file(name, ts, sc, windows.get(name, []), probation_percent))
    return sweeps


def _profile(profile: Profile | str) -> Profile:
    return PROFILES[profile] if isinstance(profile, str) else profile


def optimize_threshold(
    results: ResultsInput,
    windows: Mapping[str, Sequence[tuple[Any, Any]]],
    profile: Profile | str = "standard",
    *,
    probation_percent: float = 0.15,
) -> tuple[float, float]:
    """The corpus-wide threshold that maximises the raw NAB score, and that score.

    Every distinct anomaly score is a candidate (NAB's optimizer); ties go to the
    highest threshold. ``1.1`` means "never detect".

    Parameters
    ----------
    results
        ``{file: [(timestamp, score), ...]}`` or ``{file: (timestamps, scores)}`` with two
        numpy arrays.
    windows
        ``{file: [(start, end), ...]}``, e.g. from :func:`load_windows`.
    profile
        A :class:`Profile` or the name of one in :data:`PROFILES`.
    probation_percent
        NAB's probationary fraction.

    Examples
    --------
    >>> ts = [float(i) for i in range(100)]
    >>> scores = [0.2] * 100
    >>> scores[45] = 0.7
    >>> optimize_threshold({"f": list(zip(ts, scores))}, {"f": [(40.0, 49.0)]})
    (0.7, 0.8597925669097837)
    """
    p = _profile(profile)
    sweep = _corpus_sweep(_prepare(results, windows, probation_percent), p)
    best = int(np.argmax(sweep.totals))
    return float(sweep.thresholds[best]), float(sweep.totals[best])


@dataclass(frozen=True, slots=True)
class NABScore:
    """A corpus scored under one profile.

    ``score`` is the normalised NAB score (100 = perfect, 0 = never fires); ``raw`` the
    summed reward at ``threshold``; ``null`` and ``perfect`` the raw scores it is
    normalised between. ``detected``/``missed`` count windows; ``false_positives`` counts
    detections outside windows; ``per_file`` holds each file's raw score.
    """

    profile: str
    threshold: float
    score: float
    raw: float
    null: float
    perfect: float
    detected: int
    missed: int
    false_positives: int
    per_file: tuple[tuple[str, float], ...]


def _file_raw(sw: FileSweep, profile: Profile, threshold: float) -> tuple[float, int, int, int]:
    keep = sw.window != -2
    det = keep & (sw.scores >= threshold)
    reward = sw.weighted(profile)
    fp_rows = det & (sw.window == -1)
    raw = float(reward[fp_rows].sum())
    present = np.unique(sw.window[keep & (sw.window >= 0)])
    hit = 0
    for w in present.tolist():
        rows = det & (sw.window == w)
        if rows.any():
            raw += float(reward[rows].max())
            hit += 1
        else:
            raw -= profile.a_fn
    return raw, hit, len(present) - hit, int(fp_rows.sum())


def score_corpus(
    results: ResultsInput,
    windows: Mapping[str, Sequence[tuple[Any, Any]]],
    profile: Profile | str = "standard",
    *,
    threshold: float | None = None,
    probation_percent: float = 0.15,
) -> NABScore:
    """Score a detector's results on a corpus, NAB style.

    Parameters
    ----------
    results
        ``{file: [(timestamp, score), ...]}`` or ``{file: (timestamps, scores)}``; one
        score in ``[0, 1]`` per data row, in file order. Files missing from ``windows``
        have no windows.
    windows
        ``{file: [(start, end), ...]}``; the windows of every scored file count in the
        normalisation.
    profile
        A :class:`Profile` or the name of one in :data:`PROFILES`.
    threshold
        Detection threshold (a row is a detection when its score is ``>=`` it). ``None``
        chooses it with :func:`optimize_threshold`, as NAB does.
    probation_percent
        NAB's probationary fraction.

    Examples
    --------
    A window that is never detected costs ``A_FN``; with no detection at all the
    normalised score is 0:

    >>> ts = [float(i) for i in range(100)]
    >>> res = score_corpus({"f": [(t, 0.0) for t in ts]}, {"f": [(40.0, 49.0)]},
    ...                    "reward_low_FN_rate", threshold=0.5)
    >>> res.raw, res.score, res.missed
    (-2.0, 0.0, 1)
    """
    p = _profile(profile)
    sweeps = _prepare(results, windows, probation_percent)
    if threshold is None:
        sweep = _corpus_sweep(sweeps, p)
        threshold = float(sweep.thresholds[int(np.argmax(sweep.totals))])
    per_file = []
    raw = 0.0
    detected = missed = fps = 0
    for sw in sweeps:
        r, h, m, f = _file_raw(sw, p, threshold)
        per_file.append((sw.name, r))
        raw += r
        detected += h
        missed += m
        fps += f
    n_windows = sum(len(windows.get(name, [])) for name in results)
    null = -p.a_fn * n_windows
    perfect = p.a_tp * n_windows
    norm = 100.0 * (raw - null) / (perfect - null) if perfect != null else 0.0
    return NABScore(
        profile=p.name,
        threshold=float(threshold),
        score=norm,
        raw=raw,
        null=null,
        perfect=perfect,
        detected=detected,
        missed=missed,
        false_positives=fps,
        per_file=tuple(per_file),
    )


def load_corpus_results(
    directory: str | Path, detector: str, files: Iterable[str]
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Read NAB-format results ``<dir>/<category>/<detector>_<file>.csv`` for ``files``.

    Parameters
    ----------
    directory
        The detector's results folder (e.g. ``reference_results/numenta``).
    detector
        The detector's name, the prefix of each results file.
    files
        Data files as ``category/file.csv``.
    """
    out = {}
    for rel in files:
        cat, fname = rel.split("/")
        out[rel] = load_results(Path(directory) / cat / f"{detector}_{fname}")
    return out
