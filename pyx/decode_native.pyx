# cython: language_level=3
"""Native Simple Pose decoder: the algorithm of posecli/decode/reference.py, in C.

Arrays in, arrays out: ``decode_poses`` takes a ``(C, H, W)`` float32 heatmap stack (read as
the reference sanitises it: NaN as 0, values clipped to ±1e6) and returns ``(P, J, 3)`` float32
keypoints ``[x, y, peak score]`` (grid coordinates, in the keypoint order asked for) and
``(P,)`` float32 scores, best first. The work runs without the GIL.
The reference module documents every rule; each function here names its counterpart there and
computes in the same order, so the two agree to rounding. Only posecli/decode/ imports this.
"""

import numpy as np

cimport cython
from libc.math cimport INFINITY, log, sqrt
from libc.stdlib cimport free, malloc, qsort

cdef enum:
    MAX_KEYPOINTS = 32  # capacity of a Person; the skeleton has 18

cdef float HEATMAP_LIMIT = 1e6  # posecli.decode.reference.HEATMAP_LIMIT


cdef extern from *:
    """
    /* The peak pre-scan reads every cell of every keypoint map, so it is written for SIMD.
       posecli_block_reaches: whether any of the 32 floats at `values` is >= `threshold` (NaN
       is not). With SSE2 (every x86-64) a running maximum in two registers: MAXPS returns its
       second operand when the first is NaN, so NaN never enters the maximum (which starts at
       -inf). posecli_block_mask: bit k set where values[k] >= threshold, k < 32.
       posecli_lowest_bit: index of the lowest set bit of a non-zero mask. Elsewhere than
       SSE2 and GCC/Clang, plain loops. */
    #include <math.h>
    #if defined(__SSE2__) || defined(_M_X64)
    #include <emmintrin.h>
    static inline int posecli_block_reaches(const float *values, float threshold) {
        __m128 low = _mm_set1_ps(-INFINITY), high = low;
        for (int k = 0; k < 32; k += 8) {
            low = _mm_max_ps(_mm_loadu_ps(values + k), low);
            high = _mm_max_ps(_mm_loadu_ps(values + k + 4), high);
        }
        return _mm_movemask_ps(_mm_cmpge_ps(_mm_max_ps(low, high), _mm_set1_ps(threshold)));
    }
    static inline unsigned posecli_block_mask(const float *values, float threshold) {
        __m128 limit = _mm_set1_ps(threshold);
        unsigned mask = 0;
        for (int k = 0; k < 32; k += 4)
            mask |= (unsigned) _mm_movemask_ps(_mm_cmpge_ps(_mm_loadu_ps(values + k), limit)) << k;
        return mask;
    }
    #else
    static inline unsigned posecli_block_mask(const float *values, float threshold) {
        unsigned mask = 0;
        for (int k = 0; k < 32; ++k) mask |= (unsigned) (values[k] >= threshold) << k;
        return mask;
    }
    static inline int posecli_block_reaches(const float *values, float threshold) {
        return posecli_block_mask(values, threshold) != 0;
    }
    #endif
    #if defined(__GNUC__) || defined(__clang__)
    static inline int posecli_lowest_bit(unsigned mask) { return __builtin_ctz(mask); }
    #else
    static inline int posecli_lowest_bit(unsigned mask) {
        int k = 0;
        while (!(mask >> k & 1u)) ++k;
        return k;
    }
    #endif
    """
    enum: SCAN_BLOCK "32"  # the floats posecli_block_reaches and posecli_block_mask read
    bint _block_reaches "posecli_block_reaches" (const float* values, float threshold) nogil
    unsigned int _block_mask "posecli_block_mask" (const float* values, float threshold) nogil
    int _lowest_bit "posecli_lowest_bit" (unsigned int mask) nogil


ctypedef struct PeakCell:  # a keypoint-map cell that passed the NMS
    float value
    Py_ssize_t index  # raster index: row * width + col


ctypedef struct Peak:
    double x  # refined grid coordinates
    double y
    double score  # value of the peak cell
    int type  # keypoint type
    int id  # global peak id (index in the peak array)


ctypedef struct MapCursor:  # the row of a raster index, followed as indices grow
    Py_ssize_t row
    Py_ssize_t row_start  # raster index of the row's first cell


ctypedef struct Candidate:  # a candidate body part between peak i of type a and j of type b
    double rank
    double score
    double length
    int i
    int j


ctypedef struct Connection:  # a selected body part between two global peak ids
    int a
    int b
    double score
    double length
    double scale  # length over the part type's typical length, 0 if exempt (reference.Connection)


ctypedef struct Person:
    int peak_ids[MAX_KEYPOINTS]  # global peak id per keypoint type, -1 for none
    double part_scores[MAX_KEYPOINTS]  # score of the part that brought each keypoint
    double total
    int count  # number of keypoints
    double longest  # longest part, grid cells
    double scale  # largest Connection.scale of its parts (0: unknown)
    bint alive


ctypedef struct RankedPerson:  # a kept person in output order
    float score  # the output score, max(1 - 1/total, 0)
    int person  # index in the people array


ctypedef struct Settings:  # DecodeConfig as plain numbers
    float peak_threshold
    float part_threshold
    double part_sample_ratio
    int max_part_samples
    double long_part_fraction
    double part_length_factor
    double part_proportion_factor
    double merge_ratio
    int min_parts
    double min_mean_part_score
    int max_peaks
    bint centroid_refinement  # else the Gaussian (log-parabola) fit
    int refine_radius
    double completion_reach


cdef inline int _descending_then_ascending(
    double a_score, double b_score, Py_ssize_t a_tie, Py_ssize_t b_tie
) noexcept nogil:
    """qsort order: higher score first, equal scores by the smaller tie-breaker first."""
    if a_score != b_score:
        return -1 if a_score > b_score else 1
    return (a_tie > b_tie) - (a_tie < b_tie)


cdef int _by_value_then_index(const void* left, const void* right) noexcept nogil:
    cdef const PeakCell* a = <const PeakCell*> left
    cdef const PeakCell* b = <const PeakCell*> right
    return _descending_then_ascending(a.value, b.value, a.index, b.index)


cdef int _by_index(const void* left, const void* right) noexcept nogil:
    cdef const PeakCell* a = <const PeakCell*> left
    cdef const PeakCell* b = <const PeakCell*> right
    return (a.index > b.index) - (a.index < b.index)


cdef int _by_score_then_id(const void* left, const void* right) noexcept nogil:
    cdef const Peak* a = <const Peak*> left
    cdef const Peak* b = <const Peak*> right
    return _descending_then_ascending(a.score, b.score, a.id, b.id)


cdef int _by_score_then_person(const void* left, const void* right) noexcept nogil:
    cdef const RankedPerson* a = <const RankedPerson*> left
    cdef const RankedPerson* b = <const RankedPerson*> right
    return _descending_then_ascending(a.score, b.score, a.person, b.person)


cdef int _by_rank_then_peaks(const void* left, const void* right) noexcept nogil:
    cdef const Candidate* a = <const Candidate*> left
    cdef const Candidate* b = <const Candidate*> right
    if a.rank != b.rank:
        return -1 if a.rank > b.rank else 1
    if a.i != b.i:
        return -1 if a.i < b.i else 1
    return (a.j > b.j) - (a.j < b.j)


cdef inline float _clean(float value) noexcept nogil:
    """A heatmap value as the reference reads it: NaN as 0, clipped to ±HEATMAP_LIMIT."""
    if value != value:
        return 0.0
    return min(max(value, -HEATMAP_LIMIT), HEATMAP_LIMIT)


@cython.boundscheck(False)
@cython.wraparound(False)
cdef bint _beats_row(
    const float* row, Py_ssize_t j, Py_ssize_t width, float value, bint earlier
) noexcept nogil:
    """Whether ``value`` beats the three cells ``j-1 … j+1`` of a neighbouring row: strictly if
    the row comes before the peak's (``earlier``), else ≥."""
    cdef Py_ssize_t nj
    cdef float neighbour
    for nj in range(max(j - 1, 0), min(j + 2, width)):
        neighbour = _clean(row[nj])
        if neighbour > value or (earlier and neighbour == value):
            return False
    return True


@cython.boundscheck(False)
@cython.wraparound(False)
cdef inline bint _is_peak(
    const float* keypoint_map, Py_ssize_t height, Py_ssize_t width, Py_ssize_t i, Py_ssize_t j,
    float value,
) noexcept nogil:
    """Whether cell ``(i, j)`` of a row-major ``height × width`` map, of cleaned ``value``, is ≥
    its 3×3 neighbours and > those before it in raster order. Its own row is checked first
    (cheapest, and where most slope cells fail)."""
    cdef const float* row = keypoint_map + i * width
    if j > 0 and _clean(row[j - 1]) >= value:
        return False
    if j + 1 < width and _clean(row[j + 1]) > value:
        return False
    if i > 0 and not _beats_row(row - width, j, width, value, True):
        return False
    if i + 1 < height and not _beats_row(row + width, j, width, value, False):
        return False
    return True


cdef inline Py_ssize_t _column(
    MapCursor* cursor, Py_ssize_t index, Py_ssize_t width
) noexcept nogil:
    """The column of raster ``index``, moving ``cursor`` forward to its row (indices must come
    in increasing order: over a whole map the cursor moves ``height`` rows at most)."""
    while index - cursor.row_start >= width:
        cursor.row_start += width
        cursor.row += 1
    return index - cursor.row_start


cdef inline unsigned int _span_mask(
    const float* values, Py_ssize_t count, float threshold
) noexcept nogil:
    """Bit ``k`` set where ``values[k] >= threshold``, for ``count <= 32`` values (the tail of a
    map after its whole ``SCAN_BLOCK`` blocks)."""
    cdef Py_ssize_t k
    cdef unsigned int mask = 0
    for k in range(count):
        if values[k] >= threshold:
            mask |= 1u << k
    return mask


@cython.boundscheck(False)
@cython.wraparound(False)
cdef Py_ssize_t _peaks_in_mask(
    const float* keypoint_map, Py_ssize_t height, Py_ssize_t width, Py_ssize_t first,
    unsigned int mask, MapCursor* cursor, PeakCell* cells, Py_ssize_t count,
) noexcept nogil:
    """Appends to ``cells[count:]`` the peaks among the cells ``first + k`` of the set bits
    ``k`` of ``mask`` (the cells ≥ the threshold); returns the new count."""
    cdef Py_ssize_t index, j
    cdef float value
    while mask:
        index = first + _lowest_bit(mask)
        mask &= mask - 1
        j = _column(cursor, index, width)
        value = _clean(keypoint_map[index])
        if _is_peak(keypoint_map, height, width, cursor.row, j, value):
            cells[count].value = value
            cells[count].index = index
            count += 1
    return count


@cython.boundscheck(False)
@cython.wraparound(False)
cdef Py_ssize_t _find_peaks(
    const float* keypoint_map, Py_ssize_t height, Py_ssize_t width, const Settings* settings,
    PeakCell* cells,
) noexcept nogil:
    """reference.find_peaks on a row-major ``height × width`` map: fills ``cells`` (capacity
    ⌈H/2⌉·⌈W/2⌉) and returns how many are kept.

    Every cell of every keypoint map is read here, so the map is scanned as one flat array in
    blocks of ``SCAN_BLOCK`` cells; only the cells ≥ the threshold of the blocks that hold any
    are examined one by one."""
    cdef Py_ssize_t size = height * width, block, first, count = 0
    cdef Py_ssize_t tail = size - size % SCAN_BLOCK
    cdef float threshold = settings.peak_threshold
    cdef MapCursor cursor
    cursor.row = 0
    cursor.row_start = 0
    for block in range(size // SCAN_BLOCK):
        first = block * SCAN_BLOCK
        if _block_reaches(keypoint_map + first, threshold):
            count = _peaks_in_mask(
                keypoint_map, height, width, first, _block_mask(keypoint_map + first, threshold),
                &cursor, cells, count,
            )
    count = _peaks_in_mask(
        keypoint_map, height, width, tail,
        _span_mask(keypoint_map + tail, size - tail, threshold), &cursor, cells, count,
    )
    if count > settings.max_peaks:
        qsort(cells, count, sizeof(PeakCell), _by_value_then_index)
        count = settings.max_peaks
        qsort(cells, count, sizeof(PeakCell), _by_index)
    return count


@cython.boundscheck(False)
@cython.wraparound(False)
@cython.cdivision(True)
cdef void _centroid_refinement(
    const float[:, :, ::1] heatmaps, Py_ssize_t channel, Py_ssize_t row, Py_ssize_t col,
    int radius, Peak* peak,
) noexcept nogil:
    """reference.centroid_refinement."""
    cdef Py_ssize_t height = heatmaps.shape[1], width = heatmaps.shape[2]
    cdef Py_ssize_t r, c
    cdef Py_ssize_t first_row = max(row - radius, 0), last_row = min(row + radius, height - 1)
    cdef Py_ssize_t first_col = max(col - radius, 0), last_col = min(col + radius, width - 1)
    cdef double weight, total = 0.0, moment_x = 0.0, moment_y = 0.0
    for r in range(first_row, last_row + 1):
        for c in range(first_col, last_col + 1):
            weight = max(<double> _clean(heatmaps[channel, r, c]), 0.0)
            total += weight
            moment_x += weight * (c - col)
            moment_y += weight * (r - row)
    peak.x = moment_x / total + col
    peak.y = moment_y / total + row


cdef inline Py_ssize_t _floor(double value) noexcept nogil:
    """``floor(value)`` for a finite value within the Py_ssize_t range, without a libm call
    (part samples are at most a map's diagonal from the map)."""
    cdef Py_ssize_t truncated = <Py_ssize_t> value  # rounds towards zero
    return truncated - (truncated > value)


@cython.cdivision(True)
cdef double _log_parabola_offset(double before, double centre, double after) noexcept nogil:
    """reference._log_parabola_offset."""
    cdef double log_before, log_centre, log_after, curvature
    if not (before > 0.0 and after > 0.0):
        return 0.0
    log_before = log(before)
    log_centre = log(centre)
    log_after = log(after)
    curvature = log_before - 2.0 * log_centre + log_after
    return 0.5 * (log_before - log_after) / curvature if curvature < 0.0 else 0.0


@cython.boundscheck(False)
@cython.wraparound(False)
cdef void _gaussian_refinement(
    const float[:, :, ::1] heatmaps, Py_ssize_t channel, Py_ssize_t row, Py_ssize_t col,
    Peak* peak,
) noexcept nogil:
    """reference.gaussian_refinement."""
    cdef Py_ssize_t height = heatmaps.shape[1], width = heatmaps.shape[2]
    cdef double centre = _clean(heatmaps[channel, row, col])
    peak.x = <double> col
    peak.y = <double> row
    if 0 < col < width - 1:
        peak.x += _log_parabola_offset(
            _clean(heatmaps[channel, row, col - 1]), centre, _clean(heatmaps[channel, row, col + 1])
        )
    if 0 < row < height - 1:
        peak.y += _log_parabola_offset(
            _clean(heatmaps[channel, row - 1, col]), centre, _clean(heatmaps[channel, row + 1, col])
        )


cdef Peak _make_peak(
    const float[:, :, ::1] heatmaps, Py_ssize_t channel, Py_ssize_t row, Py_ssize_t col,
    int keypoint_type, int peak_id, const Settings* settings,
) noexcept nogil:
    """reference.find_all_peaks for one peak: refined position, score, type and id."""
    cdef Peak peak
    if settings.centroid_refinement:
        _centroid_refinement(heatmaps, channel, row, col, settings.refine_radius, &peak)
    else:
        _gaussian_refinement(heatmaps, channel, row, col, &peak)
    peak.score = _clean(heatmaps[channel, row, col])
    peak.type = keypoint_type
    peak.id = peak_id
    return peak


@cython.boundscheck(False)
@cython.wraparound(False)
@cython.cdivision(True)
cdef bint _score_part(
    const float* part_map, Py_ssize_t height, Py_ssize_t width, const Peak* start,
    const Peak* end, const Settings* settings, Candidate* candidate,
) noexcept nogil:
    """reference.score_part on a row-major ``height × width`` map: fills ``candidate.score``
    and ``.length``; False when rejected."""
    cdef double dx = end.x - start.x, dy = end.y - start.y
    cdef double length = sqrt(dx * dx + dy * dy)
    cdef double t, total = 0.0, score, needed
    cdef Py_ssize_t row, col
    cdef int sample, count, strong = 0
    cdef float value
    if length == 0.0:
        return False
    count = <int> min(_floor(length + 1.5), settings.max_part_samples)
    needed = settings.part_sample_ratio * count
    for sample in range(count):
        t = sample / <double> (count - 1) if count > 1 else 0.0
        col = min(max(_floor(start.x + t * dx + 0.5), 0), width - 1)
        row = min(max(_floor(start.y + t * dy + 0.5), 0), height - 1)
        value = _clean(part_map[row * width + col])
        strong += value > settings.part_threshold
        if strong + (count - 1 - sample) < needed:
            return False  # too few strong samples even if all the rest are strong
        total += value
    score = total / count + min(settings.long_part_fraction * height / length - 1.0, 0.0)
    if strong < needed or not score > 0.0:
        return False
    candidate.score = score
    candidate.length = length
    return True


cdef Py_ssize_t _find_connections(
    const float* part_map, Py_ssize_t height, Py_ssize_t width, const Peak* peaks,
    Py_ssize_t first_a, Py_ssize_t count_a, Py_ssize_t first_b, Py_ssize_t count_b,
    double part_length, const Settings* settings, Candidate* candidates, char* used_a,
    char* used_b, Connection* connections,
) noexcept nogil:
    """reference.find_connections on a row-major ``height × width`` part map of typical length
    ``part_length`` (0: exempt); returns the number of connections written."""
    cdef Py_ssize_t i, j, c, num_candidates = 0, num_connections = 0
    cdef Candidate* candidate
    for i in range(count_a):
        for j in range(count_b):
            candidate = &candidates[num_candidates]
            if not _score_part(
                part_map, height, width, &peaks[first_a + i], &peaks[first_b + j], settings,
                candidate,
            ):
                continue
            candidate.rank = (
                0.5 * candidate.score + 0.25 * peaks[first_a + i].score
                + 0.25 * peaks[first_b + j].score
            )
            candidate.i = <int> i
            candidate.j = <int> j
            num_candidates += 1
    qsort(candidates, num_candidates, sizeof(Candidate), _by_rank_then_peaks)
    for c in range(count_a):
        used_a[c] = 0
    for c in range(count_b):
        used_b[c] = 0
    for c in range(num_candidates):
        candidate = &candidates[c]
        if used_a[candidate.i] or used_b[candidate.j]:
            continue
        used_a[candidate.i] = 1
        used_b[candidate.j] = 1
        connections[num_connections].a = <int> (first_a + candidate.i)
        connections[num_connections].b = <int> (first_b + candidate.j)
        connections[num_connections].score = candidate.score
        connections[num_connections].length = candidate.length
        connections[num_connections].scale = (
            candidate.length / part_length if part_length > 0 else 0.0
        )
        num_connections += 1
    return num_connections


cdef void _new_person(
    Person* person, const Connection* connection, int type_a, int type_b, const Peak* peaks,
    int num_keypoints,
) noexcept nogil:
    """reference._new_person."""
    cdef int k
    for k in range(num_keypoints):
        person.peak_ids[k] = -1
        person.part_scores[k] = 0.0
    person.peak_ids[type_a] = connection.a
    person.peak_ids[type_b] = connection.b
    person.part_scores[type_a] = connection.score
    person.part_scores[type_b] = connection.score
    person.total = peaks[connection.a].score + peaks[connection.b].score + connection.score
    person.count = 2
    person.longest = connection.length
    person.scale = connection.scale
    person.alive = True


cdef int _ascending_doubles(const void* left, const void* right) noexcept nogil:
    cdef double a = (<const double*> left)[0]
    cdef double b = (<const double*> right)[0]
    return (a > b) - (a < b)


cdef void _scales_at_peaks(
    const Connection* connections, Py_ssize_t num_connections, Py_ssize_t num_peaks,
    Py_ssize_t* starts, double* scales,
) noexcept nogil:
    """reference.scales_at_peaks as one flat array: the scales at peak ``p`` are
    ``scales[starts[p]:starts[p + 1]]``, ascending (``starts``: ``num_peaks + 1``; ``scales``:
    room for ``2 × num_connections``)."""
    cdef Py_ssize_t c, p
    for p in range(num_peaks + 1):
        starts[p] = 0
    for c in range(num_connections):  # counts, shifted by one
        if connections[c].scale > 0:
            starts[connections[c].a + 1] += 1
            starts[connections[c].b + 1] += 1
    for p in range(num_peaks):  # starts[p + 1]: where peak p ends
        starts[p + 1] += starts[p]
    for c in range(num_connections):  # starts[p] moves on to where peak p ends
        if connections[c].scale > 0:
            scales[starts[connections[c].a]] = connections[c].scale
            starts[connections[c].a] += 1
            scales[starts[connections[c].b]] = connections[c].scale
            starts[connections[c].b] += 1
    for p in range(num_peaks, 0, -1):  # back to where each peak starts
        starts[p] = starts[p - 1]
    starts[0] = 0
    for p in range(num_peaks):
        qsort(&scales[starts[p]], starts[p + 1] - starts[p], sizeof(double), _ascending_doubles)


cdef bint _median_of_others(
    const double* scales, Py_ssize_t count, double own, double* median
) noexcept nogil:
    """reference.median_of_others on the ``count`` ascending ``scales`` of a peak (``own`` among
    them): writes ``*median`` and returns True, or False when no other part is there."""
    cdef Py_ssize_t own_index = 0, middle = (count - 2) // 2  # lower median of count - 1 others
    if count < 2:
        return False
    while own_index < count and scales[own_index] < own:  # np.searchsorted, side "left"
        own_index += 1
    median[0] = scales[middle] if middle < own_index else scales[middle + 1]
    return True


cdef bint _in_proportion(
    const Connection* connection, double scale, const Py_ssize_t* peak_starts,
    const double* peak_scales, const Settings* settings,
) noexcept nogil:
    """reference.in_proportion (``peak_starts``, ``peak_scales``: from ``_scales_at_peaks``)."""
    cdef int end, peak_id
    cdef double factor = settings.part_proportion_factor, local
    if factor <= 0 or connection.scale == 0:
        return True
    if scale > 0:
        return connection.scale < factor * scale
    for end in range(2):
        peak_id = connection.a if end == 0 else connection.b
        if _median_of_others(
            &peak_scales[peak_starts[peak_id]], peak_starts[peak_id + 1] - peak_starts[peak_id],
            connection.scale, &local,
        ) and not connection.scale < factor * local:
            return False
    return True


cdef void _extend(
    Person* person, int person_index, int keypoint_type, int peak_id,
    const Connection* connection, const Peak* peaks, const Py_ssize_t* peak_starts,
    const double* peak_scales, const Settings* settings, int* owners,
) noexcept nogil:
    """reference._extend; keeps ``owners`` (person index per peak id) up to date."""
    cdef int old_id = person.peak_ids[keypoint_type]
    cdef bint short_enough = (
        connection.length < settings.part_length_factor * person.longest
        and _in_proportion(connection, person.scale, peak_starts, peak_scales, settings)
    )
    if old_id == -1:
        if not short_enough:
            return
        person.count += 1
    elif old_id != peak_id:
        if person.part_scores[keypoint_type] >= connection.score or not short_enough:
            return
        person.total -= peaks[old_id].score + person.part_scores[keypoint_type]
        owners[old_id] = -1
    else:
        if person.part_scores[keypoint_type] > connection.score:
            return
        person.total += connection.score - person.part_scores[keypoint_type]
        person.part_scores[keypoint_type] = connection.score
        person.longest = max(person.longest, connection.length)
        person.scale = max(person.scale, connection.scale)
        return
    person.peak_ids[keypoint_type] = peak_id
    person.part_scores[keypoint_type] = connection.score
    person.total += peaks[peak_id].score + connection.score
    person.longest = max(person.longest, connection.length)
    person.scale = max(person.scale, connection.scale)
    owners[peak_id] = person_index


cdef void _merge(
    Person* first, int first_index, Person* second, const Connection* connection,
    const Py_ssize_t* peak_starts, const double* peak_scales, const Settings* settings,
    int num_keypoints, int* owners,
) noexcept nogil:
    """reference._merge; keeps ``owners`` up to date."""
    cdef int k
    cdef double weakest_first = 0.0, weakest_second = 0.0, longest, scale
    cdef bint seen_first = False, seen_second = False
    for k in range(num_keypoints):
        if first.peak_ids[k] >= 0 and second.peak_ids[k] >= 0:
            return
        if first.peak_ids[k] >= 0 and (not seen_first or first.part_scores[k] < weakest_first):
            weakest_first = first.part_scores[k]
            seen_first = True
        if second.peak_ids[k] >= 0 and (
            not seen_second or second.part_scores[k] < weakest_second
        ):
            weakest_second = second.part_scores[k]
            seen_second = True
    longest = max(first.longest, second.longest)
    scale = max(first.scale, second.scale)
    if (
        connection.score < settings.merge_ratio * min(weakest_first, weakest_second)
        or connection.length >= settings.part_length_factor * longest
        or not _in_proportion(connection, scale, peak_starts, peak_scales, settings)
    ):
        return
    for k in range(num_keypoints):
        if second.peak_ids[k] >= 0:
            first.peak_ids[k] = second.peak_ids[k]
            first.part_scores[k] = second.part_scores[k]
            owners[second.peak_ids[k]] = first_index
    first.count += second.count
    first.total += second.total + connection.score
    first.longest = max(longest, connection.length)
    first.scale = max(scale, connection.scale)
    second.alive = False


cdef int _assemble_people(
    const int[:, ::1] body_parts, const Connection* connections,
    const Py_ssize_t* connection_starts, const Peak* peaks, int num_keypoints,
    const Py_ssize_t* peak_starts, const double* peak_scales, const Settings* settings,
    Person* people, int* owners,
) noexcept nogil:
    """reference.assemble_people; ``owners`` starts all -1, ``peak_starts`` and ``peak_scales``
    come from ``_scales_at_peaks``. Returns the people written."""
    cdef Py_ssize_t part, c
    cdef int type_a, type_b, owner_a, owner_b, owner, num_people = 0
    cdef const Connection* connection
    for part in range(body_parts.shape[0]):
        type_a = body_parts[part, 0]
        type_b = body_parts[part, 1]
        for c in range(connection_starts[part], connection_starts[part + 1]):
            connection = &connections[c]
            owner_a = owners[connection.a]
            owner_b = owners[connection.b]
            if owner_a == -1 and owner_b == -1:
                if _in_proportion(connection, 0.0, peak_starts, peak_scales, settings):
                    _new_person(
                        &people[num_people], connection, type_a, type_b, peaks, num_keypoints
                    )
                    owners[connection.a] = num_people
                    owners[connection.b] = num_people
                    num_people += 1
            elif owner_a == owner_b or owner_a == -1 or owner_b == -1:
                owner = owner_a if owner_a != -1 else owner_b
                if owner_a == owner:
                    _extend(&people[owner], owner, type_b, connection.b, connection, peaks,
                            peak_starts, peak_scales, settings, owners)
                else:
                    _extend(&people[owner], owner, type_a, connection.a, connection, peaks,
                            peak_starts, peak_scales, settings, owners)
            else:
                _merge(&people[min(owner_a, owner_b)], min(owner_a, owner_b),
                       &people[max(owner_a, owner_b)], connection, peak_starts, peak_scales,
                       settings, num_keypoints, owners)
    return num_people


cdef bint _keep(const Person* person, const Settings* settings) noexcept nogil:
    """The filter of reference.decode_people."""
    return (person.count >= settings.min_parts
            and person.total / person.count >= settings.min_mean_part_score)


cdef int _by_count_then_index(const void* left, const void* right) noexcept nogil:
    cdef const int* a = <const int*> left  # pairs (count, index)
    cdef const int* b = <const int*> right
    if a[0] != b[0]:
        return -1 if a[0] < b[0] else 1
    return (a[1] > b[1]) - (a[1] < b[1])


cdef unsigned int _type_mask(const int* peak_ids, int num_keypoints) noexcept nogil:
    """Bit ``t`` set for every keypoint type ``t`` present."""
    cdef int t
    cdef unsigned int mask = 0
    for t in range(num_keypoints):
        if peak_ids[t] >= 0:
            mask |= 1u << t
    return mask


cdef unsigned int _linked_mask(
    unsigned int types, const unsigned int* linked, int num_keypoints
) noexcept nogil:
    """The types a body part links to one of ``types``."""
    cdef int t
    cdef unsigned int mask = 0
    for t in range(num_keypoints):
        if types & (1u << t):
            mask |= linked[t]
    return mask


cdef int _nearest_host(
    const Person* people, const unsigned int* masks, int num_people, const int* guest_ids,
    unsigned int guest_mask, int guest_count, const Peak* peaks, const unsigned int* linked,
    int num_keypoints, double reach,
) noexcept nogil:
    """reference._nearest_host: index of the host, -1 for none. ``masks``: type mask per
    person; ``linked``: per type, the mask of the types a body part links it to."""
    cdef int h, t, u, best = -1
    cdef double distance, nearest, dx, dy, best_distance = INFINITY
    cdef unsigned int excluded = guest_mask | _linked_mask(guest_mask, linked, num_keypoints)
    cdef const Person* host
    for h in range(num_people):
        host = &people[h]
        if not host.alive or host.count <= guest_count or masks[h] & excluded:
            continue
        distance = 0.0
        for t in range(num_keypoints):
            if guest_ids[t] < 0:
                continue
            nearest = INFINITY
            for u in range(num_keypoints):
                if host.peak_ids[u] >= 0:
                    dx = peaks[guest_ids[t]].x - peaks[host.peak_ids[u]].x
                    dy = peaks[guest_ids[t]].y - peaks[host.peak_ids[u]].y
                    nearest = min(nearest, sqrt(dx * dx + dy * dy))
            distance = max(distance, nearest)
        if distance <= reach * host.longest and distance < best_distance:
            best = h
            best_distance = distance
    return best


cdef int _complete_people(
    Person* people, int num_people, const Peak* peaks, int num_peaks,
    const unsigned int* linked, int num_keypoints, const Settings* settings,
) noexcept nogil:
    """reference.complete_people on the alive people. Returns -1 on memory exhaustion."""
    cdef int p, t, h
    cdef int guest_ids[MAX_KEYPOINTS]
    cdef int* order = <int*> malloc(max(2 * num_people, 1) * sizeof(int))
    cdef unsigned int* masks = <unsigned int*> malloc(max(num_people, 1) * sizeof(unsigned int))
    cdef char* held = <char*> malloc(max(num_peaks, 1))
    cdef Peak* ranked = <Peak*> malloc(max(num_peaks, 1) * sizeof(Peak))
    cdef Person* guest
    cdef Person* host
    if order == NULL or masks == NULL or held == NULL or ranked == NULL:
        free(order); free(masks); free(held); free(ranked)
        return -1
    for p in range(num_people):
        order[2 * p] = people[p].count
        order[2 * p + 1] = p
        masks[p] = _type_mask(people[p].peak_ids, num_keypoints)
    qsort(order, num_people, 2 * sizeof(int), _by_count_then_index)
    for p in range(num_people):
        guest = &people[order[2 * p + 1]]
        if not guest.alive:
            continue
        h = _nearest_host(people, masks, num_people, guest.peak_ids, masks[order[2 * p + 1]],
                          guest.count, peaks, linked, num_keypoints, settings.completion_reach)
        if h < 0:
            continue
        host = &people[h]
        for t in range(num_keypoints):
            if guest.peak_ids[t] >= 0:
                host.peak_ids[t] = guest.peak_ids[t]
                host.part_scores[t] = guest.part_scores[t]
        host.count += guest.count
        host.total += guest.total
        host.longest = max(host.longest, guest.longest)
        host.scale = max(host.scale, guest.scale)
        masks[h] |= masks[order[2 * p + 1]]
        guest.alive = False
    for p in range(num_peaks):
        held[p] = 0
    for p in range(num_people):
        if people[p].alive:
            for t in range(num_keypoints):
                if people[p].peak_ids[t] >= 0:
                    held[people[p].peak_ids[t]] = 1
    for p in range(num_peaks):
        ranked[p] = peaks[p]
    qsort(ranked, num_peaks, sizeof(Peak), _by_score_then_id)
    for t in range(num_keypoints):
        guest_ids[t] = -1
    for p in range(num_peaks):
        if held[ranked[p].id]:
            continue
        guest_ids[ranked[p].type] = ranked[p].id
        h = _nearest_host(people, masks, num_people, guest_ids, 1u << ranked[p].type, 1, peaks,
                          linked, num_keypoints, settings.completion_reach)
        guest_ids[ranked[p].type] = -1
        if h >= 0:
            people[h].peak_ids[ranked[p].type] = ranked[p].id
            people[h].count += 1
            people[h].total += ranked[p].score
            masks[h] |= 1u << ranked[p].type
    free(order); free(masks); free(held); free(ranked)
    return 0


cdef int _decode(
    const float[:, :, ::1] heatmaps, const int[:, ::1] body_parts,
    const double[::1] part_lengths, int num_keypoints, const Settings* settings,
    Person** people_out, Peak** peaks_out,
) noexcept nogil:
    """The whole decoder (reference.decode_people). Returns the number of people in
    ``*people_out`` (the kept ones have ``alive`` set), -1 on memory exhaustion. The caller
    frees ``*people_out`` and ``*peaks_out``."""
    cdef Py_ssize_t height = heatmaps.shape[1], width = heatmaps.shape[2]
    cdef Py_ssize_t num_parts = body_parts.shape[0]
    cdef Py_ssize_t k, p, n, count_a, count_b, max_pairs = 0, max_connections = 0
    cdef Py_ssize_t type_starts[MAX_KEYPOINTS + 1]
    # peaks are never 8-neighbours (the later one would have to beat the earlier strictly and
    # the earlier to match the later), so each 2×2 block holds at most one
    cdef PeakCell* cells = <PeakCell*> malloc(
        ((height + 1) // 2) * ((width + 1) // 2) * sizeof(PeakCell)
    )
    cdef Peak* peaks = <Peak*> malloc(num_keypoints * settings.max_peaks * sizeof(Peak))
    cdef Py_ssize_t* connection_starts = <Py_ssize_t*> malloc((num_parts + 1) * sizeof(Py_ssize_t))
    cdef unsigned int* linked = <unsigned int*> malloc(num_keypoints * sizeof(unsigned int))
    cdef char* used_a = <char*> malloc(settings.max_peaks)
    cdef char* used_b = <char*> malloc(settings.max_peaks)
    cdef Candidate* candidates = NULL
    cdef Connection* connections = NULL
    cdef int* owners = NULL
    cdef Person* people = NULL
    cdef Py_ssize_t* peak_starts = <Py_ssize_t*> malloc(
        (num_keypoints * settings.max_peaks + 1) * sizeof(Py_ssize_t)
    )
    cdef double* peak_scales = NULL
    cdef int num_people = -1
    peaks_out[0] = peaks
    people_out[0] = NULL
    if (cells == NULL or peaks == NULL or connection_starts == NULL or linked == NULL
            or used_a == NULL or used_b == NULL or peak_starts == NULL):
        free(cells); free(connection_starts); free(linked); free(used_a); free(used_b)
        free(peak_starts)
        return -1

    type_starts[0] = 0
    for k in range(num_keypoints):
        n = _find_peaks(&heatmaps[num_parts + k, 0, 0], height, width, settings, cells)
        for p in range(n):
            peaks[type_starts[k] + p] = _make_peak(
                heatmaps, num_parts + k, cells[p].index // width, cells[p].index % width,
                <int> k, <int> (type_starts[k] + p), settings,
            )
        type_starts[k + 1] = type_starts[k] + n
    for p in range(num_keypoints):
        linked[p] = 0
    for p in range(num_parts):
        linked[body_parts[p, 0]] |= 1u << body_parts[p, 1]
        linked[body_parts[p, 1]] |= 1u << body_parts[p, 0]
        count_a = type_starts[body_parts[p, 0] + 1] - type_starts[body_parts[p, 0]]
        count_b = type_starts[body_parts[p, 1] + 1] - type_starts[body_parts[p, 1]]
        max_pairs = max(max_pairs, count_a * count_b)
        max_connections += min(count_a, count_b)

    candidates = <Candidate*> malloc(max(max_pairs, 1) * sizeof(Candidate))
    connections = <Connection*> malloc(max(max_connections, 1) * sizeof(Connection))
    owners = <int*> malloc(max(type_starts[num_keypoints], 1) * sizeof(int))
    people = <Person*> malloc(max(max_connections, 1) * sizeof(Person))
    peak_scales = <double*> malloc(max(2 * max_connections, 1) * sizeof(double))
    if (candidates != NULL and connections != NULL and owners != NULL and people != NULL
            and peak_scales != NULL):
        connection_starts[0] = 0
        for p in range(num_parts):
            connection_starts[p + 1] = connection_starts[p] + _find_connections(
                &heatmaps[p, 0, 0], height, width, peaks,
                type_starts[body_parts[p, 0]],
                type_starts[body_parts[p, 0] + 1] - type_starts[body_parts[p, 0]],
                type_starts[body_parts[p, 1]],
                type_starts[body_parts[p, 1] + 1] - type_starts[body_parts[p, 1]],
                part_lengths[p], settings, candidates, used_a, used_b,
                &connections[connection_starts[p]],
            )
        for p in range(type_starts[num_keypoints]):
            owners[p] = -1
        _scales_at_peaks(
            connections, connection_starts[num_parts], type_starts[num_keypoints], peak_starts,
            peak_scales,
        )
        num_people = _assemble_people(
            body_parts, connections, connection_starts, peaks, num_keypoints, peak_starts,
            peak_scales, settings, people, owners,
        )
        for p in range(num_people):
            people[p].alive = people[p].alive and _keep(&people[p], settings)
        if settings.completion_reach > 0 and _complete_people(
            people, num_people, peaks, <int> type_starts[num_keypoints], linked, num_keypoints,
            settings,
        ) < 0:
            num_people = -1
        people_out[0] = people
        people = NULL
    free(cells); free(connection_starts); free(linked); free(candidates); free(connections)
    free(used_a); free(used_b); free(owners); free(people); free(peak_starts); free(peak_scales)
    return num_people


def decode_poses(
    const float[:, :, ::1] heatmaps, const int[:, ::1] body_parts,
    const double[::1] part_lengths, int num_keypoints, const int[::1] output_keypoints, *,
    float peak_threshold, float part_threshold, double part_sample_ratio, int max_part_samples,
    double long_part_fraction, double part_length_factor, double part_proportion_factor,
    double merge_ratio, int min_parts, double min_mean_part_score,
    int max_people, int max_peaks, bint centroid_refinement, int refine_radius,
    double completion_reach,
):
    """Decode a ``(C, H, W)`` float32 stack into ``(keypoints (P, J, 3) float32, scores (P,)
    float32)``: the people of reference.decode_people, sorted by score descending (ties in
    assembly order), the best ``max_people`` when it is > 0, keypoint ``j`` of each being the
    network keypoint ``output_keypoints[j]`` (``J = len(output_keypoints)``).

    Body-part maps are channels ``0 … B-1`` (``B = len(body_parts)``), keypoint maps the next
    ``num_keypoints``; ``part_lengths`` ``(B,)`` holds the typical length of each part (0:
    exempt from the proportion rule).
    Arguments after ``output_keypoints`` are keyword-only: the DecodeConfig fields of the same
    names (``centroid_refinement``: ``refinement == "centroid"``).
    """
    if not 0 < num_keypoints <= MAX_KEYPOINTS:
        raise ValueError(f"num_keypoints must be in 1..{MAX_KEYPOINTS}, got {num_keypoints}")
    if heatmaps.shape[0] < body_parts.shape[0] + num_keypoints:
        raise ValueError("too few channels for the body parts and keypoints")
    if heatmaps.shape[1] == 0 or heatmaps.shape[2] == 0:
        raise ValueError("empty heatmaps")
    if body_parts.shape[1] != 2 or not _all_below(body_parts, num_keypoints):
        raise ValueError("body_parts must be (B, 2) keypoint indices")
    if part_lengths.shape[0] != body_parts.shape[0] or not _all_non_negative(part_lengths):
        raise ValueError("part_lengths must hold one length >= 0 per body part")
    if not _all_below(output_keypoints[None, :], num_keypoints):
        raise ValueError("output_keypoints must be keypoint indices")
    if max_peaks < 1 or max_part_samples < 1 or refine_radius < 0 or not peak_threshold > 0:
        raise ValueError("need max_peaks, max_part_samples >= 1, refine_radius >= 0, "
                         "peak_threshold > 0")
    cdef Settings settings
    settings.peak_threshold = peak_threshold
    settings.part_threshold = part_threshold
    settings.part_sample_ratio = part_sample_ratio
    settings.max_part_samples = max_part_samples
    settings.long_part_fraction = long_part_fraction
    settings.part_length_factor = part_length_factor
    settings.part_proportion_factor = part_proportion_factor
    settings.merge_ratio = merge_ratio
    settings.min_parts = min_parts
    settings.min_mean_part_score = min_mean_part_score
    settings.max_peaks = max_peaks
    settings.centroid_refinement = centroid_refinement
    settings.refine_radius = refine_radius
    settings.completion_reach = completion_reach
    cdef Person* people = NULL
    cdef Peak* peaks = NULL
    cdef RankedPerson* ranked = NULL
    cdef int num_people, kept = 0
    with nogil:
        num_people = _decode(
            heatmaps, body_parts, part_lengths, num_keypoints, &settings, &people, &peaks
        )
        if num_people >= 0:
            ranked = <RankedPerson*> malloc(max(num_people, 1) * sizeof(RankedPerson))
            if ranked != NULL:
                kept = _rank_people(people, num_people, max_people, ranked)
    try:
        if num_people < 0 or ranked == NULL:
            raise MemoryError("decoder: out of memory")
        keypoints = np.zeros((kept, output_keypoints.shape[0], 3), dtype=np.float32)
        scores = np.empty(kept, dtype=np.float32)
        _write_people(people, ranked, kept, peaks, output_keypoints, keypoints, scores)
        return keypoints, scores
    finally:
        free(ranked)
        free(people)
        free(peaks)


@cython.boundscheck(False)
@cython.wraparound(False)
cdef bint _all_below(const int[:, :] values, int limit) noexcept nogil:
    """Whether every value is in ``0 … limit-1``."""
    cdef Py_ssize_t r, c
    for r in range(values.shape[0]):
        for c in range(values.shape[1]):
            if not 0 <= values[r, c] < limit:
                return False
    return True


@cython.boundscheck(False)
@cython.wraparound(False)
cdef bint _all_non_negative(const double[::1] values) noexcept nogil:
    """Whether every value is finite and >= 0."""
    cdef Py_ssize_t k
    for k in range(values.shape[0]):
        if not 0 <= values[k] < INFINITY:
            return False
    return True


cdef int _rank_people(
    const Person* people, int num_people, int max_people, RankedPerson* ranked
) noexcept nogil:
    """Fills ``ranked`` with the kept (``alive``) people, best score first, ties in assembly
    order, at most ``max_people`` when it is > 0; returns how many."""
    cdef int p, kept = 0
    for p in range(num_people):
        if people[p].alive:
            ranked[kept].score = <float> max(1.0 - 1.0 / people[p].total, 0.0)
            ranked[kept].person = p
            kept += 1
    qsort(ranked, kept, sizeof(RankedPerson), _by_score_then_person)
    return min(kept, max_people) if max_people > 0 else kept


@cython.boundscheck(False)
@cython.wraparound(False)
cdef void _write_people(
    const Person* people, const RankedPerson* ranked, int kept, const Peak* peaks,
    const int[::1] output_keypoints, float[:, :, ::1] keypoints, float[::1] scores,
) noexcept nogil:
    """Copy the ranked people into the zeroed output arrays (sized for exactly ``kept``)."""
    cdef int r, k, peak_id
    cdef const Person* person
    for r in range(kept):
        person = &people[ranked[r].person]
        for k in range(output_keypoints.shape[0]):
            peak_id = person.peak_ids[output_keypoints[k]]
            if peak_id >= 0:
                keypoints[r, k, 0] = <float> peaks[peak_id].x
                keypoints[r, k, 1] = <float> peaks[peak_id].y
                keypoints[r, k, 2] = <float> peaks[peak_id].score
        scores[r] = ranked[r].score
