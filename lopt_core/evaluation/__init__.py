"""Evaluation: how a method answers (label scores, decoded text) and how well (metrics, spectra, statistics, plots)."""
from lopt_core.evaluation.decoding import DecodeConfig, generate, generate_ids
from lopt_core.evaluation.evaluator import evaluate, evaluate_generation, macro_f1, selection_score, to_device
from lopt_core.evaluation.metrics import corpus_bleu, exact_match, rouge_l
from lopt_core.evaluation.scoring import calibrated, class_scores, content_free_probs, label_logits, loss_and_scores

__all__ = ["DecodeConfig", "calibrated", "class_scores", "content_free_probs", "corpus_bleu", "evaluate",
           "evaluate_generation", "exact_match", "generate", "generate_ids", "label_logits", "loss_and_scores",
           "macro_f1", "rouge_l", "selection_score", "to_device"]
