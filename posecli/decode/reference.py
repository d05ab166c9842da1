"""The decoder in readable NumPy: the specification the native decoder is tested against.

Input: a heatmap stack ``(C, H, W)`` float32 on the heatmap grid (cell ``(i, j)`` is
the point ``x = j, y = i``), with the body-part maps in channels ``0 … len(body_parts) - 1`` and
the keypoint maps right after them (see :mod:`posecli.spec`). Output: the people, in the order
they were assembled, as network-order keypoints ``(P, K, 3)`` ``[x, y, conf]`` in grid
coordinates (``conf`` 0 and ``x = y = 0`` for a missing keypoint) and scores ``(P,)``.

The algorithm is that of Simple Pose (Li et al., AAAI 2020) and its published code, with the
deviations listed in :mod:`posecli.decode`:

1. **Peaks.** Per keypoint map, a cell is a peak when its value is ≥ ``peak_threshold``, ≥ every
   neighbour of its 3×3 neighbourhood and strictly > the neighbours that come before it in
   raster order (so a plateau of equal maxima yields exactly one peak). At most ``max_peaks``
   per keypoint type are kept, the highest first. Each peak is refined to sub-cell precision
   (``refinement``: a Gaussian fitted to the peak and its two neighbours per axis, or the
   weighted centroid of the ``(2r+1)²`` window); its score is the value of the peak cell.
2. **Part candidates.** For every body part (a, b) and every pair of peaks of types a and b, the
   part map is sampled at ``n = min(round_half_up(length + 1), max_part_samples)`` evenly spaced
   points of the segment (nearest cell). The pair is a candidate when at least
   ``part_sample_ratio · n`` samples exceed ``part_threshold`` and the part score — the sample
   mean plus ``min(long_part_fraction · H / length - 1, 0)`` — is positive. Candidates are ranked
   by ``0.5 · part score + 0.25 · (score a + score b)`` and selected greedily, one to one.
3. **Assembly.** The selected parts of every part type, in part order, join people: a part
   whose ends belong to nobody starts a person; a part with one end in a person brings the other
   end (a different keypoint already there is replaced only by a stronger part; a new end only
   when the part is shorter than ``part_length_factor`` × the person's longest part); a part
   whose ends belong to two people with no keypoint type in common merges them when its score
   is ≥ ``merge_ratio`` × the weakest part of either and its length is within the same factor.
   **Proportion** (ours; ``part_proportion_factor`` f, 0 turns it off): every part type has a
   typical length (``part_lengths``, in torso lengths; 0 exempts the few-cell parts inside the
   head, whose lengths are mostly peak noise); a part's *scale* is its length over that (the
   torso length, in cells, it implies), and a person's scale is the largest of its parts'
   (foreshortening only shortens, so the largest is the best estimate). A part that would
   bring, replace or merge in a keypoint needs a scale below f × the person's (for a merge, the
   larger of the two people's). A part that would start a person, or join one with no scale
   yet, needs a scale below f × the local scale at each of its ends that other selected parts
   share: the lower median of their scales. So a hip–hip part drawn across a row of people, or
   a neck–nose part from one small person's neck to another's head, links no one.
4. **Filter.** A person's ``total`` is the sum of its keypoints' peak scores and of the scores
   of the parts that brought them (a replaced keypoint takes its two terms away; a merge adds
   both totals and the joining part). People with fewer than ``min_parts`` keypoints or with
   ``total / keypoints < min_mean_part_score`` are dropped.
5. **Completion** (ours; ``completion_reach``, 0 turns it off). The skeleton has no part from a
   wrist to anything but its elbow, from an eye to a shoulder…, so a person whose linking
   keypoint is not labelled or not visible falls apart into a main person plus fragments and
   lone peaks. People (smallest first) and then leftover peaks (strongest first) join the
   nearest larger person that has none of their keypoint types and no type a body part links to
   theirs — where no part could have decided — if they lie within ``completion_reach`` × that
   person's longest part. Totals add up (a lone peak adds its score). The score of a person is
   ``max(1 - 1 / total, 0)`` (the filter lets a total down to 0.9 through).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from posecli.config import DecodeConfig

#: Heatmap values are clipped to ±this (so ±inf reads as ±1e6) and NaN reads as 0.
HEATMAP_LIMIT = 1e6

#: The 8 neighbours of a cell as (row, column) offsets, with whether each comes before the cell
#: in raster order (a peak must be strictly greater than those, and ≥ the others).
_NEIGHBOURS: tuple[tuple[int, int, bool], ...] = tuple(
    (di, dj, di < 0 or (di == 0 and dj < 0))
    for di in (-1, 0, 1)
    for dj in (-1, 0, 1)
    if (di, dj) != (0, 0)
)


@dataclass
class Peaks:
    """Keypoint candidates of all types, concatenated type after type.

    ``xy``: ``(N, 2)`` float64 refined grid coordinates; ``scores``: ``(N,)`` float64 peak
    values; ``starts``: ``(K + 1,)`` offsets, the peaks of type ``k`` are
    ``starts[k]:starts[k + 1]``.
    """

    xy: np.ndarray
    scores: np.ndarray
    starts: np.ndarray

    @property
    def types(self) -> np.ndarray:
        """``(N,)`` keypoint type of every peak."""
        return np.repeat(np.arange(len(self.starts) - 1), np.diff(self.starts))

    def ids_of_type(self, keypoint_type: int) -> range:
        return range(int(self.starts[keypoint_type]), int(self.starts[keypoint_type + 1]))


@dataclass
class Connection:
    """A selected body part between peaks ``a`` and ``b`` (global peak ids).

    ``length`` is in grid cells; ``scale`` is ``length`` over the part type's typical length
    (``part_lengths``): the torso length, in grid cells, that the part implies (0 for a part
    exempt from the proportion rule).
    """

    a: int
    b: int
    score: float
    length: float
    scale: float


@dataclass
class Person:
    """A person being assembled: one peak id per keypoint type (-1: none)."""

    peak_ids: list[int]
    part_scores: list[float]  # score of the part that brought each keypoint
    total: float
    count: int  # number of keypoints
    longest: float  # length of the longest part, grid cells
    scale: float  # largest Connection.scale of its parts: torso length, grid cells (0: unknown)
    alive: bool = True


def find_peaks(keypoint_map: np.ndarray, threshold: np.float32, max_peaks: int) -> np.ndarray:
    """Peak cells of one ``(H, W)`` float32 map: ``(N, 2)`` int64 ``(row, col)``, raster order.

    Ties are broken by raster order (see the module docstring); at most ``max_peaks`` are
    kept, the highest values first, equal values in raster order.
    """
    height, width = keypoint_map.shape
    padded = np.pad(keypoint_map, 1, constant_values=-np.inf)
    is_peak = keypoint_map >= threshold
    for di, dj, earlier in _NEIGHBOURS:
        neighbour = padded[1 + di : 1 + di + height, 1 + dj : 1 + dj + width]
        is_peak &= keypoint_map > neighbour if earlier else keypoint_map >= neighbour
    cells = np.argwhere(is_peak)  # (N, 2) raster order
    if len(cells) > max_peaks:
        values = keypoint_map[cells[:, 0], cells[:, 1]]
        strongest = np.argsort(-values, kind="stable")[:max_peaks]
        cells = cells[np.sort(strongest)]
    return cells


def centroid_refinement(
    keypoint_map: np.ndarray, row: int, col: int, radius: int
) -> tuple[float, float]:
    """Weighted centroid ``(x, y)`` of the window of half-size ``radius`` around a peak cell.

    The window is clipped to the map; weights are the map values clipped below at 0 (the peak
    cell itself is positive, so the weights never sum to 0).
    """
    height, width = keypoint_map.shape
    rows = np.arange(max(row - radius, 0), min(row + radius, height - 1) + 1)
    cols = np.arange(max(col - radius, 0), min(col + radius, width - 1) + 1)
    weights = np.maximum(keypoint_map[np.ix_(rows, cols)].astype(np.float64), 0.0)
    total = weights.sum()
    x = (weights * (cols - col)[None, :]).sum() / total + col
    y = (weights * (rows - row)[:, None]).sum() / total + row
    return float(x), float(y)


def _log_parabola_offset(before: float, centre: float, after: float) -> float:
    """Vertex of the parabola through ``(-1, log before), (0, log centre), (1, log after)``.

    Exact for a Gaussian; within ±0.5 because ``centre`` is a maximum; 0 when a neighbour is
    not positive or the three are flat.
    """
    if not (before > 0.0 and after > 0.0):
        return 0.0
    log_before, log_centre, log_after = math.log(before), math.log(centre), math.log(after)
    curvature = log_before - 2.0 * log_centre + log_after
    return 0.5 * (log_before - log_after) / curvature if curvature < 0.0 else 0.0


def gaussian_refinement(keypoint_map: np.ndarray, row: int, col: int) -> tuple[float, float]:
    """Sub-cell ``(x, y)`` of a peak: a Gaussian fitted per axis to the peak and its two
    neighbours (no shift along an axis where the peak is on the border)."""
    height, width = keypoint_map.shape
    centre = float(keypoint_map[row, col])
    x, y = float(col), float(row)
    if 0 < col < width - 1:
        x += _log_parabola_offset(
            float(keypoint_map[row, col - 1]), centre, float(keypoint_map[row, col + 1])
        )
    if 0 < row < height - 1:
        y += _log_parabola_offset(
            float(keypoint_map[row - 1, col]), centre, float(keypoint_map[row + 1, col])
        )
    return x, y


def refine_peak(
    keypoint_map: np.ndarray, row: int, col: int, config: DecodeConfig
) -> tuple[float, float]:
    """Refined grid ``(x, y)`` of the peak cell ``(row, col)`` (``config.refinement``)."""
    if config.refinement == "centroid":
        return centroid_refinement(keypoint_map, row, col, config.refine_radius)
    return gaussian_refinement(keypoint_map, row, col)


def find_all_peaks(keypoint_maps: np.ndarray, config: DecodeConfig) -> Peaks:
    """Refined peaks of every ``(K, H, W)`` keypoint map."""
    threshold = np.float32(config.peak_threshold)
    xy, scores, starts = [], [], [0]
    for keypoint_map in keypoint_maps:
        for row, col in find_peaks(keypoint_map, threshold, config.max_peaks):
            xy.append(refine_peak(keypoint_map, int(row), int(col), config))
            scores.append(float(keypoint_map[row, col]))
        starts.append(len(scores))
    return Peaks(
        xy=np.array(xy, dtype=np.float64).reshape(-1, 2),
        scores=np.array(scores, dtype=np.float64),
        starts=np.array(starts, dtype=np.int64),
    )


def score_part(
    part_map: np.ndarray, start: np.ndarray, end: np.ndarray, config: DecodeConfig
) -> tuple[float, float] | None:
    """``(score, length)`` of the body part from ``start`` to ``end`` (grid ``(x, y)``), or None
    if it is rejected."""
    height, width = part_map.shape
    dx, dy = float(end[0] - start[0]), float(end[1] - start[1])
    length = math.sqrt(dx * dx + dy * dy)
    if length == 0.0:
        return None
    count = min(int(np.floor(length + 1.5)), config.max_part_samples)  # round_half_up(length + 1)
    t = np.arange(count) / (count - 1) if count > 1 else np.zeros(1)
    cols = np.clip(np.floor(start[0] + t * dx + 0.5).astype(np.int64), 0, width - 1)
    rows = np.clip(np.floor(start[1] + t * dy + 0.5).astype(np.int64), 0, height - 1)
    samples = part_map[rows, cols]  # (count,) float32
    strong = int(np.count_nonzero(samples > np.float32(config.part_threshold)))
    mean = np.cumsum(samples, dtype=np.float64)[-1] / count  # added left to right, as natively
    score = float(mean + min(config.long_part_fraction * height / length - 1.0, 0.0))
    if strong < config.part_sample_ratio * count or not score > 0.0:
        return None
    return score, float(length)


def find_connections(
    part_map: np.ndarray,
    ids_a: range,
    ids_b: range,
    peaks: Peaks,
    part_length: float,
    config: DecodeConfig,
) -> list[Connection]:
    """Selected parts of one type (``part_length``: its typical length, torso lengths, 0 for a
    part exempt from the proportion rule): candidates ranked, then chosen greedily one to one."""
    candidates = []  # (-rank, i, j, score, length); i, j index ids_a, ids_b
    for i, a in enumerate(ids_a):
        for j, b in enumerate(ids_b):
            scored = score_part(part_map, peaks.xy[a], peaks.xy[b], config)
            if scored is None:
                continue
            score, length = scored
            rank = 0.5 * score + 0.25 * peaks.scores[a] + 0.25 * peaks.scores[b]
            candidates.append((-rank, i, j, score, length))
    candidates.sort(key=lambda candidate: candidate[:3])
    used_a, used_b, connections = set(), set(), []
    for _, i, j, score, length in candidates:
        if i in used_a or j in used_b:
            continue
        used_a.add(i)
        used_b.add(j)
        scale = length / part_length if part_length > 0 else 0.0
        connections.append(Connection(ids_a[i], ids_b[j], score, length, scale))
    return connections


def _new_person(connection: Connection, types: tuple[int, int], peaks: Peaks, k: int) -> Person:
    peak_ids, part_scores = [-1] * k, [0.0] * k
    for keypoint_type, peak_id in zip(types, (connection.a, connection.b), strict=True):
        peak_ids[keypoint_type] = peak_id
        part_scores[keypoint_type] = connection.score
    total = peaks.scores[connection.a] + peaks.scores[connection.b] + connection.score
    return Person(peak_ids, part_scores, float(total), 2, connection.length, connection.scale)


def in_proportion(
    connection: Connection, scale: float, peak_scales: list[np.ndarray], config: DecodeConfig
) -> bool:
    """The proportion rule: whether ``connection`` may join a person of ``scale``
    (``Person.scale``; 0 for a part that would start a person, or a person with no scale yet).

    Always when ``part_proportion_factor`` is 0 or the part is exempt; else its scale must be
    below the factor × ``scale``, or, without one, × the local scale at each of its ends that
    other (not exempt) selected parts share: the lower median of theirs (``peak_scales`` from
    :func:`scales_at_peaks`).
    """
    factor = config.part_proportion_factor
    if factor <= 0 or connection.scale == 0:
        return True
    if scale > 0:
        return connection.scale < factor * scale
    for peak_id in (connection.a, connection.b):
        local = median_of_others(peak_scales[peak_id], connection.scale)
        if local is not None and not connection.scale < factor * local:
            return False
    return True


def scales_at_peaks(connections: list[list[Connection]], num_peaks: int) -> list[np.ndarray]:
    """Per peak id, the ``Connection.scale`` of every selected part (of any type, not exempt)
    with an end there: ``num_peaks`` float64 arrays, sorted ascending."""
    at_peak: list[list[float]] = [[] for _ in range(num_peaks)]
    for part_connections in connections:
        for connection in part_connections:
            if connection.scale > 0:
                at_peak[connection.a].append(connection.scale)
                at_peak[connection.b].append(connection.scale)
    return [np.sort(np.array(scales, dtype=np.float64)) for scales in at_peak]


def median_of_others(scales: np.ndarray, own: float) -> float | None:
    """Lower median of the sorted ``scales`` of a peak with one occurrence of ``own`` (the
    part asking, which is among them) left out; None when no other part is there."""
    others = np.delete(scales, int(np.searchsorted(scales, own)))
    return float(others[(len(others) - 1) // 2]) if len(others) else None


def _extend(
    person: Person,
    keypoint_type: int,
    peak_id: int,
    connection: Connection,
    peaks: Peaks,
    peak_scales: list[np.ndarray],
    config: DecodeConfig,
) -> None:
    """Bring ``peak_id`` (the end of ``connection`` not yet in ``person``) into ``person``."""
    old_id = person.peak_ids[keypoint_type]
    short_enough = connection.length < config.part_length_factor * person.longest and (
        in_proportion(connection, person.scale, peak_scales, config)
    )
    if old_id == -1:
        if not short_enough:
            return
        person.count += 1
    elif old_id != peak_id:
        if person.part_scores[keypoint_type] >= connection.score or not short_enough:
            return
        person.total -= peaks.scores[old_id] + person.part_scores[keypoint_type]
    else:  # the end is already this person's: a stronger part takes over its score
        if person.part_scores[keypoint_type] > connection.score:
            return
        person.total += connection.score - person.part_scores[keypoint_type]
        person.part_scores[keypoint_type] = connection.score
        person.longest = max(person.longest, connection.length)
        person.scale = max(person.scale, connection.scale)
        return
    person.peak_ids[keypoint_type] = peak_id
    person.part_scores[keypoint_type] = connection.score
    person.total += peaks.scores[peak_id] + connection.score
    person.longest = max(person.longest, connection.length)
    person.scale = max(person.scale, connection.scale)


def _merge(
    first: Person,
    second: Person,
    connection: Connection,
    peak_scales: list[np.ndarray],
    config: DecodeConfig,
) -> None:
    """Merge ``second`` into ``first`` through ``connection`` if they are disjoint and it is
    strong, short enough and in proportion."""
    in_first = [peak_id >= 0 for peak_id in first.peak_ids]
    in_second = [peak_id >= 0 for peak_id in second.peak_ids]
    if any(a and b for a, b in zip(in_first, in_second, strict=True)):
        return
    weakest = min(
        min(s for s, present in zip(first.part_scores, in_first, strict=True) if present),
        min(s for s, present in zip(second.part_scores, in_second, strict=True) if present),
    )
    longest = max(first.longest, second.longest)
    scale = max(first.scale, second.scale)
    if (
        connection.score < config.merge_ratio * weakest
        or connection.length >= config.part_length_factor * longest
        or not in_proportion(connection, scale, peak_scales, config)
    ):
        return
    for keypoint_type, present in enumerate(in_second):
        if present:
            first.peak_ids[keypoint_type] = second.peak_ids[keypoint_type]
            first.part_scores[keypoint_type] = second.part_scores[keypoint_type]
    first.count += second.count
    first.total += second.total + connection.score
    first.longest = max(longest, connection.length)
    first.scale = max(scale, connection.scale)
    second.alive = False


def assemble_people(
    connections: list[list[Connection]],
    body_parts: np.ndarray,
    peaks: Peaks,
    num_keypoints: int,
    config: DecodeConfig,
) -> list[Person]:
    """Greedy assembly of the selected parts of every part type, in part order."""
    people: list[Person] = []
    peak_scales = scales_at_peaks(connections, len(peaks.scores))
    for (type_a, type_b), part_connections in zip(body_parts, connections, strict=True):
        type_a, type_b = int(type_a), int(type_b)
        for connection in part_connections:
            owners = [
                person for person in people
                if person.alive and (
                    person.peak_ids[type_a] == connection.a
                    or person.peak_ids[type_b] == connection.b
                )
            ]  # fmt: skip
            if not owners:
                if in_proportion(connection, 0.0, peak_scales, config):
                    people.append(_new_person(connection, (type_a, type_b), peaks, num_keypoints))
            elif len(owners) == 1:
                person = owners[0]
                if person.peak_ids[type_a] == connection.a:
                    _extend(person, type_b, connection.b, connection, peaks, peak_scales, config)
                else:
                    _extend(person, type_a, connection.a, connection, peaks, peak_scales, config)
            else:
                _merge(owners[0], owners[1], connection, peak_scales, config)
    return [person for person in people if person.alive]


def linked_types(body_parts: np.ndarray, num_keypoints: int) -> np.ndarray:
    """``(K, K)`` bool: whether a body part joins keypoint types ``a`` and ``b``."""
    linked = np.zeros((num_keypoints, num_keypoints), dtype=bool)
    for a, b in body_parts:
        linked[a, b] = linked[b, a] = True
    return linked


def _distance(a: np.ndarray, b: np.ndarray) -> float:
    dx, dy = float(a[0] - b[0]), float(a[1] - b[1])
    return math.sqrt(dx * dx + dy * dy)


def _nearest_host(
    people: list[Person],
    guest_ids: list[int],
    guest_count: int,
    peaks: Peaks,
    linked: np.ndarray,
    config: DecodeConfig,
) -> Person | None:
    """The person a guest (peak id per type, -1 for none) may join, or None.

    A host has more keypoints than the guest, none of the guest's types, and no type that a
    body part links to one of the guest's (no part could have said yes or no); every guest
    keypoint must lie within ``completion_reach`` × the host's longest part of a host keypoint.
    The nearest host (largest such distance smallest) wins; ties go to the earlier person.
    """
    guest = [(t, peak_id) for t, peak_id in enumerate(guest_ids) if peak_id >= 0]
    best, best_distance = None, math.inf
    for host in people:
        if not host.alive or host.count <= guest_count:
            continue
        host_types = [t for t, peak_id in enumerate(host.peak_ids) if peak_id >= 0]
        if any(host.peak_ids[t] >= 0 or linked[t, host_types].any() for t, _ in guest):
            continue
        distance = max(
            min(_distance(peaks.xy[peak_id], peaks.xy[host.peak_ids[t]]) for t in host_types)
            for _, peak_id in guest
        )
        if distance <= config.completion_reach * host.longest and distance < best_distance:
            best, best_distance = host, distance
    return best


def complete_people(
    people: list[Person], peaks: Peaks, linked: np.ndarray, config: DecodeConfig
) -> list[Person]:
    """Step 5 (ours): small people, then leftover peaks, join a nearby person they complete.

    People are taken smallest first (ties in assembly order); a joining person brings its
    keypoints, part scores and total. Then every peak that belongs to nobody, strongest first,
    joins its host with its peak score added to the total. Returns the people left.
    """
    if config.completion_reach <= 0:
        return people
    for guest in sorted(people, key=lambda person: person.count):
        if not guest.alive:
            continue
        host = _nearest_host(people, guest.peak_ids, guest.count, peaks, linked, config)
        if host is not None:
            for t, peak_id in enumerate(guest.peak_ids):
                if peak_id >= 0:
                    host.peak_ids[t] = peak_id
                    host.part_scores[t] = guest.part_scores[t]
            host.count += guest.count
            host.total += guest.total
            host.longest = max(host.longest, guest.longest)
            host.scale = max(host.scale, guest.scale)
            guest.alive = False
    held = {peak_id for person in people if person.alive for peak_id in person.peak_ids}
    types = peaks.types
    for peak_id in np.argsort(-peaks.scores, kind="stable"):
        if peak_id in held:
            continue
        guest_ids = [-1] * len(linked)
        guest_ids[types[peak_id]] = int(peak_id)
        host = _nearest_host(people, guest_ids, 1, peaks, linked, config)
        if host is not None:
            host.peak_ids[types[peak_id]] = int(peak_id)
            host.count += 1
            host.total += peaks.scores[peak_id]
    return [person for person in people if person.alive]


def sanitised(heatmaps: np.ndarray) -> np.ndarray:
    """The float32 stack with NaN read as 0 and every value clipped to ±HEATMAP_LIMIT."""
    limit = np.float32(HEATMAP_LIMIT)
    return np.clip(np.nan_to_num(heatmaps, nan=0.0), -limit, limit)


def decode_people(
    heatmaps: np.ndarray,
    body_parts: np.ndarray,
    part_lengths: np.ndarray,
    num_keypoints: int,
    config: DecodeConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """Decode a ``(C, H, W)`` float32 stack into people, in assembly order (see ``sanitised``
    for NaN and infinite values). ``body_parts``: ``(B, 2)`` keypoint pairs; ``part_lengths``:
    ``(B,)`` their typical lengths (torso lengths here; 0 exempts a part from the proportion
    rule).

    Returns ``keypoints`` ``(P, K, 3)`` float32 ``[x, y, peak score]`` (network order, grid
    coordinates, zeros for a missing keypoint) and ``scores`` ``(P,)`` float32.
    """
    heatmaps = sanitised(heatmaps)
    num_parts = len(body_parts)
    peaks = find_all_peaks(heatmaps[num_parts : num_parts + num_keypoints], config)
    connections = [
        find_connections(
            heatmaps[part],
            peaks.ids_of_type(int(a)),
            peaks.ids_of_type(int(b)),
            peaks,
            float(part_lengths[part]),
            config,
        )
        for part, (a, b) in enumerate(body_parts)
    ]
    people = [
        person
        for person in assemble_people(connections, body_parts, peaks, num_keypoints, config)
        if person.count >= config.min_parts
        and person.total / person.count >= config.min_mean_part_score
    ]
    people = complete_people(people, peaks, linked_types(body_parts, num_keypoints), config)
    keypoints = np.zeros((len(people), num_keypoints, 3), dtype=np.float32)
    scores = np.zeros(len(people), dtype=np.float32)
    for p, person in enumerate(people):
        for keypoint_type, peak_id in enumerate(person.peak_ids):
            if peak_id >= 0:
                keypoints[p, keypoint_type, :2] = peaks.xy[peak_id]
                keypoints[p, keypoint_type, 2] = peaks.scores[peak_id]
        scores[p] = max(1.0 - 1.0 / person.total, 0.0)
    return keypoints, scores
