"""Sample-quality metrics, one file each, all computed from precomputed features.

    from gan.metrics import fid, kid, precision_recall, density_coverage
    fid(real_features, fake_features)          # [N_r, D], [N_g, D] -> float

``gan.evaluation.evaluate_generator`` combines them under stable names.
"""

from gan.metrics.closest_record import dcr_ratio_percentile, dcr_share, nearest_distances
from gan.metrics.conditional_accuracy import conditional_accuracy, per_class_accuracy
from gan.metrics.density_coverage import density_coverage
from gan.metrics.fid import fid
from gan.metrics.inception_score import inception_score
from gan.metrics.kid import kid
from gan.metrics.membership_auroc import membership_auroc
from gan.metrics.mode_coverage import class_histogram, class_kl, mode_coverage, modes_covered
from gan.metrics.precision_recall import knn_radii, precision_recall

__all__ = [
    "class_histogram",
    "class_kl",
    "conditional_accuracy",
    "dcr_ratio_percentile",
    "dcr_share",
    "density_coverage",
    "fid",
    "inception_score",
    "kid",
    "knn_radii",
    "membership_auroc",
    "mode_coverage",
    "modes_covered",
    "nearest_distances",
    "per_class_accuracy",
    "precision_recall",
]
