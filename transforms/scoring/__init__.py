"""Pairwise scoring of candidate pairs: field comparisons and a Fellegi-Sunter model fitted by EM.

``comparisons`` (pure: records -> normalised fields -> comparison levels), ``fellegi_sunter`` (pure:
m/u, EM over level-pattern histograms, term frequencies, weights) and ``score_pairs`` (the Beam
stage ``ScorePairs`` that joins record fields to the merged pairs, fits the model and scores).
"""
