# fm_svm.h's plan struct and output kinds, declared once for _svm and _qsvm.
from libc.stdint cimport int32_t

cdef extern from "fm_svm.h" nogil:
    ctypedef struct fm_svm_plan:
        Py_ssize_t F, P, M, K, NP
        int kernel, degree
        double gamma, coef0, big, big_row
        const double *sv
        const double *sn
        const double *coef
        const double *b
        const double *pa
        const double *pb
        const double *lin
        const int32_t *seg
        const int32_t *pair
    # what a call writes per row: pair values, their negation (binary decision_function),
    # one-vs-rest scores, libsvm's vote, the one-vs-rest argmax, libsvm's probabilities
    enum:
        C_RAW "FM_SVM_RAW"
        C_NEG "FM_SVM_NEG"
        C_OVR "FM_SVM_OVR"
        C_VOTE "FM_SVM_VOTE"
        C_TIES "FM_SVM_TIES"
        C_PROBA "FM_SVM_PROBA"
