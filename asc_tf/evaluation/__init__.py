"""Evaluation of a learned encoder: fine-tuning and linear probe, retrieval top-k, pictures."""
