"""Pseudo-labels for training: teacher models, their fusion, and resumable COCO output.

``teachers.py`` runs the ONNX teachers, ``openpose.py`` groups OpenPose's part affinity fields
into people, ``fusion.py`` fuses teacher passes and keeps the labels, ``writer.py`` writes COCO
keypoint files atomically and resumably. The command line (``posecli label``) uses the names
below.
"""

from posecli.train.label.writer import check_label_output, label_images, partial_path

__all__ = ["check_label_output", "label_images", "partial_path"]
