"""Generation metrics: corpus BLEU with several references per source (sacrebleu) and ROUGE-L
(rouge-score, best-matching reference), both on a 0-100 scale.

METEOR, NIST and CIDEr (the E2E challenge's other metrics) are not reported: no maintained package
that installs offline computes them here (NLTK's METEOR needs WordNet downloaded at run time, and
the official e2e-metrics scripts are not a package).
"""
from __future__ import annotations


def corpus_bleu(hypotheses: list[str], references: list[list[str]]) -> float:
    """Corpus BLEU; ``references[i]`` holds every reference of source i (any number ≥ 1)."""
    import sacrebleu

    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} reference lists")
    if any(not refs for refs in references):
        raise ValueError("every source needs at least one reference")
    width = max(len(refs) for refs in references)
    streams = [[refs[j] if j < len(refs) else None for refs in references] for j in range(width)]
    return float(sacrebleu.corpus_bleu(hypotheses, streams).score)


def rouge_l(hypotheses: list[str], references: list[list[str]]) -> float:
    """Mean ROUGE-L F-measure, each hypothesis scored against its best reference."""
    from rouge_score import rouge_scorer

    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} reference lists")
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    pairs = zip(hypotheses, references, strict=True)
    scores = [scorer.score_multi(refs, hyp)["rougeL"].fmeasure for hyp, refs in pairs]
    return 100.0 * sum(scores) / max(len(scores), 1)


def exact_match(hypotheses: list[str], answers: list[str]) -> float:
    """Share of hypotheses equal to the answer after lower-casing and trimming punctuation."""
    def norm(s: str) -> str:
        return s.strip().strip(".!?").strip().lower()
    return sum(norm(h) == norm(a) for h, a in zip(hypotheses, answers, strict=True)) / max(len(answers), 1)
