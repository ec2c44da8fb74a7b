"""Clustering-based classification of picked sub-volumes: DISCA.

The loop is a generalised EM (DISCA, "Methods" and Fig. 2):

1. a YOPO feature network (§ "YOPO": 3D convolutions *without pooling*, a global
   max-pool after every convolution, the pooled vectors concatenated, a fully connected
   feature layer; Gaussian dropout on the input while training; orthogonal kernels and
   zero biases) turns every sub-volume into a feature vector;
2. the features (PCA-whitened) are modelled by a full-covariance Gaussian mixture; K is
   chosen by BIC over a candidate range (default 2-20, the paper's Table 1 setting);
   a fit warm-started from the previous iteration's labels competes with a fresh fit
   and the better one is kept (the "epsilon-greedy" step);
3. cluster labels are aligned to the previous iteration's (Hungarian matching) so a
   class keeps its number;
4. YOPO is trained on the labels (smoothed by a factor that decays over iterations) on
   the sub-volumes and on randomly rotated copies whose empty corners are filled with
   N(0, 1) noise (§ "rotation invariance"); when K changes the classification head is
   replaced and first trained alone on the fixed features;
5. stop when the labels no longer change (or after the last iteration); the result is
   the iteration with the lowest DDBI among those with the most frequent K (DDBI alone
   favours merging two close classes: on 2,000 boxes at SNR 0.03 a last-iteration merge
   to K=4 had the lowest DDBI after seven iterations at the true K=5).

Choices the paper leaves open, made here and stated so users can judge them:
- features are 64-long, not 1024: the GMM sees at most ``pca_dim`` PCA components
  anyway, and a smaller layer keeps a 2-core CPU fast;
- the warm and the fresh mixture are compared by BIC (equal to comparing likelihoods
  when they have the same K, and fair when they do not);
- DDBI (defined in the paper's SI, which is not in the seed) is implemented as the
  Davies-Bouldin index with Mahalanobis distances: a cluster's scatter is the mean
  distance of its members to its mean under its own covariance, the separation of two
  clusters the distance of their means under the average of the two covariances;
- below ``network_from`` boxes the first E-step, on invariant descriptors, is the result.

After DISCA, picker3d's own steps (:func:`classify_boxes`): classes dissolved or merged on
their aligned averages, empty picks split off by centre density, and aligned class averages
with half maps and FSC (docs/classification.md).

Modules: :mod:`.boxes` (extraction, normalisation, contrast, averages), :mod:`.descriptors`
(the first E-step's features), :mod:`.yopo` (the network), :mod:`.mixture` (BIC mixtures,
label alignment, DDBI, the density split, scores), :mod:`.disca` (the loop and the whole
classification), :mod:`.alignment` (reference-free alignment with the missing wedge),
:mod:`.refinement` (merging, multi-reference refinement), :mod:`.fsc`, :mod:`.files` (what
``picker3d classify`` reads and writes).
"""
from .boxes import box_contrast, class_averages, extract_subvolumes, normalize_box
from .disca import classify_boxes, disca, disca_on_boxes
from .mixture import clustering_scores

__all__ = ["box_contrast", "class_averages", "classify_boxes", "clustering_scores", "disca", "disca_on_boxes",
           "extract_subvolumes", "normalize_box"]
