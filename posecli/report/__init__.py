"""``posecli report``: a self-contained HTML page (and PNG figures) of a track file.

Read the JSON-lines tracks of ``posecli video --json`` (:func:`read_tracks`), measure each
tracked person (time on screen, hip-centre trajectory, knee/elbow/hip/shoulder angles, share of
frames each keypoint was found in: :mod:`posecli.report.motion`), draw a contact sheet and the
figures with matplotlib (the ``report`` extra: ``pip install 'posecli[report]'``) and write the
page (:func:`make_report`). matplotlib is imported only when a figure is drawn.
"""

from posecli.report.figures import ReportDependencyError
from posecli.report.motion import JOINT_ANGLES, joint_angle, joint_angles, smooth_keypoints
from posecli.report.page import Report, build_report
from posecli.report.tracks import HEADER_KEY, TrackFile, TracksFileError, read_tracks
from posecli.report.write import make_report, render_html, write_figures, write_report_html

__all__ = [
    "HEADER_KEY",
    "JOINT_ANGLES",
    "Report",
    "ReportDependencyError",
    "TrackFile",
    "TracksFileError",
    "build_report",
    "joint_angle",
    "joint_angles",
    "make_report",
    "read_tracks",
    "render_html",
    "smooth_keypoints",
    "write_figures",
    "write_report_html",
]
