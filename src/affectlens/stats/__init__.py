"""The statistics core: grouped cross-validation, group bootstrap and group permutation tests.

Arrays in, numbers out; nothing here knows about models or run folders. The unit of resampling is the
*group* (in affectlens, the prompt): rows that share a group never straddle train and test, the bootstrap
draws whole groups, and the permutation test shuffles which label each group carries. Rows from one
prompt are near-copies of each other, so treating them as independent would leak and inflate everything.

Every claim against chance carries a permutation p-value p = (k + 1) / (n + 1), where k counts null
scores at least as large as the observed one; the smallest p a test can report is 1 / (n + 1).
"""

from affectlens.stats.classifier import ClassifierResult, evaluate_classifier
from affectlens.stats.cv import accuracy, default_estimator, grouped_cv_predict, grouped_folds, macro_f1
from affectlens.stats.resampling import (
    PermutationResult,
    bootstrap_ci,
    min_attainable_p,
    pearson_with_ci,
    permutation_test,
)

__all__ = [
    "ClassifierResult",
    "PermutationResult",
    "accuracy",
    "bootstrap_ci",
    "default_estimator",
    "evaluate_classifier",
    "grouped_cv_predict",
    "grouped_folds",
    "macro_f1",
    "min_attainable_p",
    "pearson_with_ci",
    "permutation_test",
]
