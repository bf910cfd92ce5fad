"""Evaluation of embedders: IR metrics on BEIR-layout folders and Spearman on STS pair files."""
